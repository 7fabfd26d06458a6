"""The engine's readers-writer lock: readers share, a writer is alone, and a waiting
writer holds new readers back (so searches cannot starve a write)."""

import threading
import time

from shard.rwlock import RWLock


def _started(fn):
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_readers_share_and_a_writer_waits_for_them():
    lock = RWLock()
    inside = []
    with lock.shared():
        with lock.shared():  # a second reader gets in while the first holds it
            inside.append("r2")
        wrote = threading.Event()

        def writer():
            with lock.exclusive():
                wrote.set()

        w = _started(writer)
        assert not wrote.wait(0.1)  # a reader holds it: the writer waits
    assert wrote.wait(5)
    w.join(5)
    assert inside == ["r2"]


def test_a_waiting_writer_holds_new_readers_back():
    lock = RWLock()
    order = []
    first = lock.shared()
    first.__enter__()
    w = _started(lambda: (lock.exclusive().__enter__(), order.append("w"), lock.exclusive().__exit__(None, None, None)))
    deadline = time.monotonic() + 5
    while not lock._waiting_writers and time.monotonic() < deadline:
        time.sleep(0.001)
    assert lock._waiting_writers == 1

    def reader():
        with lock.shared():
            order.append("r")

    r = _started(reader)
    time.sleep(0.05)
    assert order == []  # the new reader queues behind the waiting writer
    first.__exit__(None, None, None)
    w.join(5)
    r.join(5)
    assert order == ["w", "r"]
