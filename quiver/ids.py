"""Point ids: numeric ids and UUID strings onto the engine's uint64 ids.

The engine keys points by uint64. Applications may use unsigned integers below
2^63 (so an id fits int64 everywhere) or UUIDs. A UUID maps to

    id = 2^63 | (blake2b-64(uuid bytes) mod 2^63)

so numeric ids (lower half) and UUIDs (upper half) never collide. Two UUIDs can
collide in 63 bits (probability ~n^2 / 2^64, about 1e-8 for 500M points); the
coordinator keeps the UUID's canonical string in the payload key
:data:`UUID_PAYLOAD_KEY` and refuses an upsert whose UUID hashes onto a stored
point holding a different UUID, so a collision can never overwrite a point.
"""

from __future__ import annotations

import hashlib
import uuid as _uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shard.errors import InvalidArgument

UUID_BIT = np.uint64(1 << 63)
MAX_NUMERIC_ID = (1 << 63) - 1
#: Payload key holding a UUID point's canonical UUID string; reserved.
UUID_PAYLOAD_KEY = "_quiver_uuid"


def uuid_to_id(text: str) -> tuple[int, str]:
    """(engine id, canonical UUID string) of a UUID given in any form uuid.UUID accepts."""
    try:
        u = _uuid.UUID(str(text))
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"point id {text!r} is not a UUID") from None
    h = int.from_bytes(hashlib.blake2b(u.bytes, digest_size=8).digest(), "little")
    return (1 << 63) | (h & MAX_NUMERIC_ID), str(u)


@dataclass(frozen=True)
class IdBatch:
    """A batch of point ids resolved to engine ids.

    ids: uint64 (n,), the engine's ids.
    uuids: None when every id is numeric, else a list of n strings holding the
        canonical UUID at UUID positions and "" at numeric ones.
    """

    ids: np.ndarray
    uuids: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def external(self) -> list[int | str]:
        """The ids as the application sees them (ints and UUID strings)."""
        out: list[int | str] = self.ids.tolist()
        if self.uuids is not None:
            for i, u in enumerate(self.uuids):
                if u:
                    out[i] = u
        return out


def from_columns(num: Sequence[int] | np.ndarray, uuid: Sequence[str]) -> IdBatch:
    """Resolve the PointIds columns (see quiver.proto): the i-th id is uuid[i] if non-empty, else num[i]."""
    num = np.asarray(num, dtype=np.uint64) if len(num) else np.zeros(0, np.uint64)
    if len(uuid) and len(num) and len(uuid) != len(num):
        raise InvalidArgument(
            f"ids: {len(num)} numeric and {len(uuid)} uuid entries; a mixed batch needs both columns of equal length"
        )
    n = max(len(num), len(uuid))
    if len(num) and int(num.max()) > MAX_NUMERIC_ID:
        bad = int(num[num > MAX_NUMERIC_ID][0])
        raise InvalidArgument(f"point id {bad} is too large: numeric ids must be below 2^63 (use a UUID instead)")
    if not len(uuid):
        return IdBatch(np.ascontiguousarray(num))
    ids = num.copy() if len(num) else np.zeros(n, np.uint64)
    canon = [""] * n
    for i, text in enumerate(uuid):
        if text:
            ids[i], canon[i] = uuid_to_id(text)
        elif not len(num):
            raise InvalidArgument(f"ids: entry {i} is empty and there is no numeric id for it")
    return IdBatch(ids, canon if any(canon) else None)


def to_columns(values) -> tuple[np.ndarray | list[int], list[str]]:
    """Split application ids (ints, UUID strings or uuid.UUID, or an integer array) into PointIds columns."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        if values.dtype.kind == "i" and len(values) and int(values.min()) < 0:
            raise InvalidArgument("point ids must be >= 0")
        return values.astype(np.uint64, copy=False).ravel(), []
    values = list(values)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        if any(v < 0 for v in values):
            raise InvalidArgument("point ids must be >= 0")
        return values, []
    num: list[int] = []
    uuids: list[str] = []
    for v in values:
        if isinstance(v, (str, _uuid.UUID)):
            num.append(0)
            uuids.append(str(v))
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0:
            num.append(int(v))
            uuids.append("")
        else:
            raise InvalidArgument(f"point id {v!r} is neither a non-negative integer nor a UUID")
    if all(uuids):
        num = []
    return num, uuids


def is_uuid_id(ids: np.ndarray) -> np.ndarray:
    """Mask of engine ids that stand for UUIDs."""
    return (ids & UUID_BIT) != 0
