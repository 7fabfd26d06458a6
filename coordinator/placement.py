"""Collections, where their shards live, and which shard holds a point.

The coordinator's metadata is one record per collection, persisted in its own
LMDB environment (``<data_dir>/meta``) so a restart keeps every collection and
its placement. A node is named by its address (host:port); give nodes stable
addresses (a StatefulSet's DNS names, fixed ports locally).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import lmdb
import numpy as np

from shard.config import CollectionConfig
from shard.errors import InvalidArgument

MAX_SHARDS = 1024
#: LMDB map size of the metadata store: a collection record is ~1 KB.
META_MAP_SIZE = 64 << 20

#: Collection lifecycle: "creating" until every shard exists, "ready", and
#: "deleting" until every shard is dropped. Only "ready" collections serve.
STATES = ("creating", "ready", "deleting")


@dataclass(frozen=True)
class CollectionMeta:
    name: str
    config: CollectionConfig
    replication_factor: int
    #: placement[shard_id] = addresses of the nodes holding that shard's replicas.
    placement: tuple[tuple[str, ...], ...]
    state: str = "ready"

    @property
    def shard_number(self) -> int:
        return len(self.placement)

    def with_state(self, state: str) -> "CollectionMeta":
        return replace(self, state=state)

    def to_json(self) -> bytes:
        return json.dumps({
            "name": self.name, "config": self.config.to_dict(), "replication_factor": self.replication_factor,
            "placement": [list(p) for p in self.placement], "state": self.state,
        }, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "CollectionMeta":
        d = json.loads(raw)
        return cls(name=d["name"], config=CollectionConfig.from_dict(d["config"]),
                   replication_factor=int(d["replication_factor"]),
                   placement=tuple(tuple(p) for p in d["placement"]), state=d["state"])


def place_shards(shard_number: int, replication_factor: int, nodes: list[str],
                 load: dict[str, int] | None = None) -> tuple[tuple[str, ...], ...]:
    """Spread ``shard_number`` shards x ``replication_factor`` replicas over ``nodes``.

    Replicas of one shard go to distinct nodes; each replica goes to the node
    holding the fewest shards so far (``load`` counts existing ones), ties by
    node order, so placements are deterministic.
    """
    if not nodes:
        raise InvalidArgument("the coordinator has no shard nodes (start it with --shard-nodes)")
    if not (1 <= shard_number <= MAX_SHARDS):
        raise InvalidArgument(f"shard_number must be in [1, {MAX_SHARDS}], got {shard_number}")
    if not (1 <= replication_factor <= len(nodes)):
        raise InvalidArgument(f"replication_factor must be in [1, {len(nodes)}] (the number of shard nodes), "
                              f"got {replication_factor}")
    count = {n: (load or {}).get(n, 0) for n in nodes}
    rank = {n: i for i, n in enumerate(nodes)}
    out = []
    for _ in range(shard_number):
        chosen = sorted(nodes, key=lambda n: (count[n], rank[n]))[:replication_factor]
        for n in chosen:
            count[n] += 1
        out.append(tuple(chosen))
    return tuple(out)


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def shard_of(ids: np.ndarray, shard_number: int) -> np.ndarray:
    """Shard of each point: splitmix64(id) mod shard_number, as int64 (n,).

    Part of the on-disk format: changing it would strand every stored point.
    The mixer spreads sequential ids evenly (plain ``id % n`` would not for
    strided ids).
    """
    z = np.asarray(ids, np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    z ^= z >> np.uint64(31)
    return (z % np.uint64(shard_number)).astype(np.int64)


class MetadataStore:
    """Collection records in LMDB; written from the coordinator's admin paths only."""

    def __init__(self, data_dir: str | os.PathLike):
        path = Path(data_dir) / "meta"
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=META_MAP_SIZE, max_dbs=1, subdir=True)
        self.db = self.env.open_db(b"collections")

    def load_all(self) -> dict[str, CollectionMeta]:
        with self.env.begin(db=self.db) as txn:
            return {k.decode(): CollectionMeta.from_json(bytes(v)) for k, v in txn.cursor()}

    def put(self, meta: CollectionMeta) -> None:
        with self.env.begin(db=self.db, write=True) as txn:
            txn.put(meta.name.encode(), meta.to_json())

    def delete(self, name: str) -> None:
        with self.env.begin(db=self.db, write=True) as txn:
            txn.delete(name.encode())

    def close(self) -> None:
        self.env.close()
