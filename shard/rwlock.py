"""A readers-writer lock: many searches at once, or one in-RAM mutation."""

from __future__ import annotations

import threading


class RWLock:
    """Writer-preferring: once a writer waits, new readers queue behind it, so
    a steady stream of searches cannot starve a write.

    ``shared()`` and ``exclusive()`` are context managers. They are plain
    objects rather than generator context managers, and the last reader out
    wakes waiters only when a writer waits: every search takes the shared side,
    and those two cost it ~2 us.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        self._shared = _Shared(self)
        self._exclusive = _Exclusive(self)

    def shared(self) -> "_Shared":
        return self._shared

    def exclusive(self) -> "_Exclusive":
        return self._exclusive


class _Side:
    """One side of an ``RWLock``, as a reusable context manager (no state of its own)."""
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock


class _Shared(_Side):
    __slots__ = ()

    def __enter__(self) -> None:
        lk = self._lock
        with lk._cond:
            while lk._writer or lk._waiting_writers:
                lk._cond.wait()
            lk._readers += 1

    def __exit__(self, *exc) -> None:
        lk = self._lock
        with lk._cond:
            lk._readers -= 1
            if lk._readers == 0 and lk._waiting_writers:
                lk._cond.notify_all()


class _Exclusive(_Side):
    __slots__ = ()

    def __enter__(self) -> None:
        lk = self._lock
        with lk._cond:
            lk._waiting_writers += 1
            try:
                while lk._writer or lk._readers:
                    lk._cond.wait()
            except BaseException:  # gave up waiting: readers held back by it may go
                lk._waiting_writers -= 1
                lk._cond.notify_all()
                raise
            lk._waiting_writers -= 1
            lk._writer = True

    def __exit__(self, *exc) -> None:
        lk = self._lock
        with lk._cond:
            lk._writer = False
            lk._cond.notify_all()
