"""Fan a call out to shards concurrently and collect the answers.

Every shard is asked before any answer is awaited (``asyncio.gather``), so the
wall time is the slowest shard's, not the sum. Reads ask one replica per shard,
the least loaded, and fail over to the next when a node is unreachable or too
slow; writes go to every replica.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

from shard.errors import DeadlineExceeded, QuiverError, Unavailable
from shard.node import Shard

T = TypeVar("T")
P = TypeVar("P")


async def settle(aw: Awaitable[T]) -> T | QuiverError:
    """The awaitable's value, or the QuiverError it raised (other errors propagate)."""
    try:
        return await aw
    except QuiverError as e:
        return e


#: Errors after which a read tries the shard's next replica within the same call.
FAILOVER = (Unavailable, DeadlineExceeded)


def _by_load(reps: list[Shard], start: int) -> list[Shard]:
    """Replicas least loaded first (calls on the wire or queued), ties rotated by ``start``."""
    n = len(reps)
    if n == 1:
        return reps
    rotated = [reps[(start + i) % n] for i in range(n)]
    return sorted(rotated, key=lambda r: getattr(r, "load", 0))


async def _hedged(order: list[Shard], call, part, hedge_after: float):
    """Ask ``order[0]``; if it has not answered after ``hedge_after`` s, ask the next replica too,
    and so on; the first answer wins (the others are cancelled). A failover error starts the
    next replica at once. Returns the answer, or the last error if every replica failed."""
    pending: set[asyncio.Task] = set()
    last: QuiverError | None = None
    nxt = 0

    def launch() -> None:
        nonlocal nxt
        pending.add(asyncio.ensure_future(settle(call(order[nxt], part))))
        nxt += 1

    launch()
    try:
        while pending:
            done, _ = await asyncio.wait(pending, timeout=hedge_after if nxt < len(order) else None,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:  # slow: hedge to the next replica
                launch()
                continue
            for t in done:
                pending.discard(t)
                r = t.result()
                if not isinstance(r, FAILOVER):
                    return r
                last = r
            if not pending and nxt < len(order):
                launch()
        return last
    finally:
        for t in pending:
            t.cancel()


async def read_shards(replicas: list[list[Shard]], call: Callable[[Shard, P], Awaitable[T]],
                      parts: dict[int, P] | None = None, start: int = 0,
                      hedge_after: float | None = None) -> dict[int, T | QuiverError]:
    """Ask one replica of each shard; on Unavailable or DeadlineExceeded try the shard's next one.

    ``parts`` maps shard index -> that shard's part of the request (default:
    every shard, part None); ``call(replica, part)`` makes the call. Replicas
    are tried least loaded first, ``start`` rotating among equals.
    ``hedge_after`` (seconds): also ask the next replica when the first has
    not answered by then (a hedged read), taking whichever answers first.
    Returns shard index -> value or error.
    """
    parts = dict.fromkeys(range(len(replicas))) if parts is None else parts

    async def one(s: int) -> T | QuiverError:
        order = _by_load(replicas[s], start)
        if not order:
            return Unavailable(f"shard {s} has no replica that can serve reads now")
        if hedge_after is not None and len(order) > 1:
            return await _hedged(order, call, parts[s], hedge_after)
        for rep in order:
            r = await settle(call(rep, parts[s]))
            if not isinstance(r, FAILOVER):
                break
        return r

    keys = list(parts)
    if len(keys) == 1:  # skip gather's task creation on the common single-shard path
        return {keys[0]: await one(keys[0])}
    return dict(zip(keys, await asyncio.gather(*(one(s) for s in keys))))


async def write_shards(replicas: list[list[Shard]], call: Callable[[Shard, P], Awaitable[T]],
                       parts: dict[int, P]) -> dict[int, list[T | QuiverError]]:
    """Send each shard's part to every one of its replicas; shard index -> outcome per replica."""
    keys = list(parts)
    flat = await asyncio.gather(*(settle(call(r, parts[s])) for s in keys for r in replicas[s]))
    out, i = {}, 0
    for s in keys:
        n = len(replicas[s])
        out[s] = list(flat[i:i + n])
        i += n
    return out


def first_error(outcomes) -> QuiverError | None:
    for o in outcomes:
        if isinstance(o, QuiverError):
            return o
    return None
