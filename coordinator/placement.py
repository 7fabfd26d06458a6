"""Collections, where their shard replicas live, and which shard holds a point.

A collection's record (:class:`CollectionMeta`) lists, for each shard, its
replicas: a node (named by its address, host:port; give nodes stable
addresses: a StatefulSet's DNS names, fixed ports locally) and the replica's
state. Records live in the metadata store (``coordinator.metadata``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np

from shard.config import CollectionConfig
from shard.errors import InvalidArgument

MAX_SHARDS = 1024

#: Collection lifecycle: "creating" until every shard exists, "ready", and
#: "deleting" until every shard is dropped. Only "ready" collections serve.
STATES = ("creating", "ready", "deleting")

#: Replica states. An active replica serves reads and takes writes; a receiving
#: one is the target of a transfer (takes writes, serves no reads until the
#: copy is complete); a dead one missed writes and is caught up (by a transfer
#: into it) before it serves again.
ACTIVE, RECEIVING, DEAD = "active", "receiving", "dead"
REPLICA_STATES = (ACTIVE, RECEIVING, DEAD)


@dataclass(frozen=True)
class Replica:
    node: str
    state: str = ACTIVE
    #: Names the transfer filling a receiving replica (ties the switch to it).
    token: str = ""

    def to_dict(self) -> dict:
        d = {"node": self.node, "state": self.state}
        if self.token:
            d["token"] = self.token
        return d


@dataclass(frozen=True)
class CollectionMeta:
    name: str
    config: CollectionConfig
    replication_factor: int
    #: replicas[shard_id] = that shard's replicas.
    replicas: tuple[tuple[Replica, ...], ...]
    state: str = "ready"
    #: Replicas that must apply a write before it is acknowledged; 0 = every live one.
    write_consistency: int = 0

    @property
    def shard_number(self) -> int:
        return len(self.replicas)

    @property
    def placement(self) -> tuple[tuple[str, ...], ...]:
        """The nodes holding each shard's replicas, whatever their state."""
        return tuple(tuple(r.node for r in reps) for reps in self.replicas)

    def readers(self, shard_id: int) -> list[str]:
        return [r.node for r in self.replicas[shard_id] if r.state == ACTIVE]

    def writers(self, shard_id: int) -> list[str]:
        return [r.node for r in self.replicas[shard_id] if r.state != DEAD]

    def replica(self, shard_id: int, node: str) -> Replica | None:
        for r in self.replicas[shard_id]:
            if r.node == node:
                return r
        return None

    def with_state(self, state: str) -> "CollectionMeta":
        return replace(self, state=state)

    def with_shard(self, shard_id: int, reps: tuple[Replica, ...]) -> "CollectionMeta":
        out = list(self.replicas)
        out[shard_id] = tuple(reps)
        return replace(self, replicas=tuple(out))

    def to_json(self) -> bytes:
        return json.dumps({
            "name": self.name, "config": self.config.to_dict(), "replication_factor": self.replication_factor,
            "replicas": [[r.to_dict() for r in reps] for reps in self.replicas], "state": self.state,
            "write_consistency": self.write_consistency,
        }, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "CollectionMeta":
        d = json.loads(raw)
        return cls(name=d["name"], config=CollectionConfig.from_dict(d["config"]),
                   replication_factor=int(d["replication_factor"]),
                   replicas=tuple(tuple(Replica(r["node"], r.get("state", ACTIVE), r.get("token", ""))
                                        for r in reps) for reps in d["replicas"]),
                   state=d["state"], write_consistency=int(d.get("write_consistency", 0)))

    @classmethod
    def placed(cls, name: str, config: CollectionConfig, replication_factor: int,
               placement: tuple[tuple[str, ...], ...], state: str = "ready",
               write_consistency: int = 0) -> "CollectionMeta":
        """A record whose replicas are all active, from node addresses per shard."""
        return cls(name, config, replication_factor, tuple(tuple(Replica(n) for n in p) for p in placement),
                   state, write_consistency)


def replica_load(collections, nodes=None) -> dict[str, int]:
    """Replicas per node over ``collections`` (CollectionMeta values); with ``nodes``, exactly
    those nodes (0 for a node holding none, other nodes left out)."""
    load: dict[str, int] = {}
    for m in collections:
        for addrs in m.placement:
            for a in addrs:
                load[a] = load.get(a, 0) + 1
    return load if nodes is None else {n: load.get(n, 0) for n in nodes}


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
