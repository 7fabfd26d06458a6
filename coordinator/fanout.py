"""Fan a call out to shards concurrently and collect the answers.

Every shard is asked before any answer is awaited (``asyncio.gather``), so the
wall time is the slowest shard's, not the sum. Reads ask one replica per shard
and fail over to the next replica when a node is unreachable; writes go to
every replica.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

from shard.errors import QuiverError, Unavailable
from shard.node import Shard

T = TypeVar("T")
P = TypeVar("P")


async def settle(aw: Awaitable[T]) -> T | QuiverError:
    """The awaitable's value, or the QuiverError it raised (other errors propagate)."""
    try:
        return await aw
    except QuiverError as e:
        return e


async def read_shards(replicas: list[list[Shard]], call: Callable[[Shard, P], Awaitable[T]],
                      parts: dict[int, P] | None = None, start: int = 0) -> dict[int, T | QuiverError]:
    """Ask one replica of each shard; on Unavailable try the shard's next replica.

    ``parts`` maps shard index -> that shard's part of the request (default:
    every shard, part None); ``call(replica, part)`` makes the call. ``start``
    rotates which replica goes first, spreading reads. Returns shard index ->
    value or error.
    """
    parts = dict.fromkeys(range(len(replicas))) if parts is None else parts

    async def one(s: int) -> T | QuiverError:
        reps = replicas[s]
        for attempt in range(len(reps)):
            r = await settle(call(reps[(start + attempt) % len(reps)], parts[s]))
            if not isinstance(r, Unavailable):
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
