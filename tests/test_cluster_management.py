"""Cluster management over real processes on loopback: transfers under writes, replication and
failover, catch-up, rebalancing, snapshots, and the admin service's refusals.

Three shard-node processes serve the module; tests kill and restart them on
the same address and data dir. Every load loop is bounded in count and time.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import numpy as np
import pytest

from quiver.client import Client
from quiver.v1 import admin_pb2 as apb
from quiver.v1 import admin_pb2_grpc

DIM = 16
#: Rows for tests/RELIABILITY.md (QUIVER_WRITE_RELIABILITY=1): test key -> (fault, what happened, data lost).
_ROWS: dict[str, tuple[str, str, str]] = {}
_ORDER = ("move", "storm", "dead-node", "etcd", "coordinator-kill")


@pytest.fixture(scope="module", autouse=True)
def reliability_report():
    yield
    import reliability_doc

    if reliability_doc.enabled() and all(k in _ROWS for k in _ORDER):
        lines = ["## Faults during cluster management", "",
                 "From `tests/test_cluster_management.py`: three shard-node processes, coordinators in the test "
                 "process or (last row) as a process of their own. \"Data lost\" is checked as the exact set "
                 "of acknowledged ids (each with its own vector) against what the cluster holds; each test fails "
                 "if one is missing or extra.", "",
                 "| fault | what the system did | data lost |", "| --- | --- | --- |"]
        lines += [f"| {reliability_doc.cell(a, 400)} | {reliability_doc.cell(b, 1200)} | {c} |"
                  for a, b, c in (_ROWS[k] for k in _ORDER)]
        reliability_doc.write_section("management", lines)


def _start_node(root, i: int, address: str = "127.0.0.1:0"):
    from conftest import NodeProc
    from quiver.local import spawn, wait_port_file

    data, pf, log = root / f"node-{i}", root / f"node-{i}.port", root / f"node-{i}.log"
    p = spawn("shard-node", ["--listen", address, "--data-dir", str(data), "--grace", "5"], pf, log)
    info = wait_port_file(pf, p, timeout=120, log_file=log)
    return NodeProc(f"127.0.0.1:{info['port']}", info.get("metrics_port") or 0, p, data)


class Nodes:
    """Three shard-node processes that tests may kill and restart in place."""

    def __init__(self, root):
        self.root = root
        self.procs = [_start_node(root, i) for i in range(3)]

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.procs]

    def kill(self, i: int) -> None:
        n = self.procs[i]
        os.kill(n.proc.pid, signal.SIGKILL)
        n.proc.wait(timeout=10)

    def restart(self, i: int) -> None:
        n = self.procs[i]
        if n.proc.poll() is None:
            self.kill(i)
        self.procs[i] = _start_node(self.root, i, n.address)

    def ensure_up(self) -> None:
        for i, n in enumerate(self.procs):
            if n.proc.poll() is not None:
                self.restart(i)

    def stop(self) -> None:
        from conftest import stop_shard_nodes

        stop_shard_nodes([n for n in self.procs if n.proc.poll() is None])


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    ns = Nodes(tmp_path_factory.mktemp("mgmt-nodes"))
    yield ns
    ns.stop()


@pytest.fixture
def cluster(nodes, tmp_path, cluster_helpers):
    """A coordinator over the first two nodes (the third is registered by tests that need it)."""
    nodes.ensure_up()
    handle = cluster_helpers[0](tmp_path / "coord", nodes.addresses[:2], shard_timeout=5.0, repair_interval=0.2)
    client = Client(handle.address, timeout=60)
    channel = grpc.insecure_channel(handle.address)
    admin = admin_pb2_grpc.QuiverAdminStub(channel)
    yield handle, client, admin
    for name in client.list_collections():
        _wait(lambda: _try(client.delete_collection, name), 20, f"deleting {name}")
    client.close()
    channel.close()
    handle.close()


def _hash_vectors(ids: np.ndarray) -> np.ndarray:
    """A deterministic pseudo-random vector per id (splitmix64 of id * DIM + j, uniform in [-0.5, 0.5)),
    so any stored point can be checked against its id and rankings have no near ties."""
    z = ids.astype(np.uint64)[:, None] * np.uint64(DIM) + np.arange(DIM, dtype=np.uint64)[None, :]
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return ((z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24) - 0.5).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _wait_op(admin, op_id: str, timeout: float = 90.0) -> apb.Operation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = admin.GetOperation(apb.GetOperationRequest(id=op_id), timeout=10)
        if op.state != "running":
            return op
        time.sleep(0.05)
    raise AssertionError(f"operation {op_id} still running after {timeout} s")


def _wait(pred, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _try(fn, *args) -> bool:
    try:
        fn(*args)
        return True
    except Exception:  # noqa: BLE001 - retried by the caller
        return False


def _replicas(client, name) -> dict[int, dict[str, str]]:
    from quiver.v1 import quiver_pb2

    info = client._call(client._stub.GetCollection, quiver_pb2.GetCollectionRequest(name=name))
    out: dict[int, dict[str, str]] = {}
    for r in info.shards:
        out.setdefault(r.shard_id, {})[r.node] = r.state
    return out


class Writer(threading.Thread):
    """Upserts fresh ids (and deletes some earlier ones) until stopped; bounded in batches and time.

    ``alive`` holds every id whose upsert was acknowledged and not deleted since;
    ``deleted`` every id whose delete was acknowledged.
    """

    def __init__(self, client, name: str, start_id: int, batch: int = 50, max_batches: int = 2000,
                 max_seconds: float = 60.0):
        super().__init__(daemon=True)
        self.client, self.name, self.next_id, self.batch = client, name, start_id, batch
        self.max_batches, self.max_seconds = max_batches, max_seconds
        self.alive: set[int] = set()
        self.deleted: set[int] = set()
        self.errors: list[Exception] = []
        self.batches = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop_flag.is_set() and self.batches < self.max_batches \
                and time.monotonic() - t0 < self.max_seconds:
            ids = np.arange(self.next_id, self.next_id + self.batch, dtype=np.uint64)
            try:
                self.client.upsert(self.name, ids, _hash_vectors(ids))
                self.alive.update(ids.tolist())
                self.next_id += self.batch
                if self.batches % 4 == 3:
                    doomed = np.array(sorted(self.alive)[:: max(1, len(self.alive) // 7)][:7], np.uint64)
                    self.client.delete(self.name, doomed)
                    self.alive.difference_update(doomed.tolist())
                    self.deleted.update(doomed.tolist())
            except Exception as e:  # noqa: BLE001 - the test asserts there were none
                self.errors.append(e)
                return
            self.batches += 1


def _move_while_writing(admin, writer_client, name: str, base: np.ndarray, from_node: str, to_node: str,
                        start_id: int) -> tuple[Writer, apb.Operation]:
    """Move shard 0 of ``name`` while a Writer (on ``writer_client``) upserts and deletes, from
    before the move starts until after it switched; returns the stopped writer and the operation."""
    w = Writer(writer_client, name, start_id)
    w.alive.update(base.tolist())
    w.start()
    _wait(lambda: w.batches >= 3 or w.errors, 30, "the writer to start")
    op = admin.MoveShard(apb.MoveShardRequest(collection=name, shard_id=0, from_node=from_node, to_node=to_node),
                         timeout=10)
    done = _wait_op(admin, op.id)
    n = w.batches
    _wait(lambda: w.batches >= n + 3 or w.errors, 30, "writes after the switch")
    w.stop_flag.set()
    w.join(30)
    assert not w.errors, w.errors
    return w, done


def _check_exact(client, name: str, alive: set[int], deleted: set[int]) -> None:
    """The collection holds exactly ``alive`` (none lost, none extra), each with its own vector."""
    want = np.array(sorted(alive), np.uint64)
    assert client.count(name) == len(want)
    got = client.get(name, want, with_payload=False, with_vector=True)
    assert sorted(np.asarray(got.ids, np.uint64).tolist()) == want.tolist()
    order = np.argsort(np.asarray(got.ids, np.uint64))
    np.testing.assert_allclose(_unit(got.vectors[order]), _unit(_hash_vectors(want)), rtol=1e-5, atol=1e-6)
    if deleted:
        assert len(client.get(name, np.array(sorted(deleted), np.uint64))) == 0


def test_move_under_concurrent_writes_loses_and_duplicates_nothing(cluster, nodes):
    handle, client, admin = cluster
    admin.AddNode(apb.AddNodeRequest(address=nodes.addresses[2]), timeout=10)
    client.create_collection("moving", DIM, "cosine", quantization="scalar", shard_number=2)
    base = np.arange(6000, dtype=np.uint64)
    client.upsert_many("moving", base, _hash_vectors(base))
    src = _replicas(client, "moving")[0]
    (from_node,) = src
    to_node = next(a for a in nodes.addresses if a not in src)

    t0 = time.monotonic()
    w, done = _move_while_writing(admin, client, "moving", base, from_node, to_node, 100_000)
    assert done.state == "done", done.error
    t = done.transfers[0]
    # points_total is the source's count when the copy began; deletes may land before the export's read
    assert t.state == "done" and t.points_total >= 3000 and t.points_copied >= 3000, t
    assert _replicas(client, "moving")[0] == {to_node: "active"}
    _check_exact(client, "moving", w.alive, w.deleted)
    # the source's files are gone only after the switch: it no longer lists the shard
    from quiver.v1 import shard_node_pb2, shard_node_pb2_grpc
    with grpc.insecure_channel(from_node) as ch:
        listed = shard_node_pb2_grpc.ShardNodeStub(ch).ListShards(shard_node_pb2.ListShardsRequest(), timeout=10)
    assert ("moving", 0) not in {(s.shard.collection, s.shard.shard_id) for s in listed.shards}
    _ROWS["move"] = ("A shard moved to another node while a client upserts 50-point batches and deletes "
                     "earlier points (replication 1, 2 shards, scalar codes)",
                     f"The move copied {t.points_copied:,} points and switched; the writer ran "
                     f"{w.batches} batches across it ({time.monotonic() - t0:.1f} s) without an error. "
                     f"Afterwards the collection held exactly the {len(w.alive):,} acknowledged ids, none of "
                     f"the {len(w.deleted)} deleted ones, and the source node no longer listed the shard.",
                     "none; nothing duplicated")


def test_replica_killed_in_query_storm_fails_no_query_then_catches_up(cluster, nodes):
    handle, client, admin = cluster
    client.create_collection("replicated", DIM, "cosine", quantization="binary", shard_number=2,
                             replication_factor=2)
    ids = np.arange(3000, dtype=np.uint64)
    client.upsert_many("replicated", ids, _hash_vectors(ids))
    queries = _hash_vectors(np.arange(10**6, 10**6 + 20, dtype=np.uint64))
    expected = [client.search("replicated", q, limit=10, exact=True).ids.tolist() for q in queries]

    failures, done = [], [0]

    def storm():
        t0 = time.monotonic()
        with Client(handle.address, timeout=30) as c:
            while done[0] < 600 and time.monotonic() - t0 < 30:
                q = done[0] % len(queries)
                try:
                    r = c.search("replicated", queries[q], limit=10, exact=True)
                    if r.ids.tolist() != expected[q]:
                        failures.append(f"query {q}: wrong results")
                except Exception as e:  # noqa: BLE001 - counted: the test wants none
                    failures.append(repr(e))
                done[0] += 1

    th = threading.Thread(target=storm, daemon=True)
    th.start()
    _wait(lambda: done[0] >= 50, 30, "the storm to get going")
    nodes.kill(1)
    th.join(60)
    assert done[0] >= 100 and not failures, failures[:3]
    storm_n = done[0]

    # writes while the replica is down are acknowledged and mark it dead
    more = np.arange(3000, 3500, dtype=np.uint64)
    client.upsert("replicated", more, _hash_vectors(more))
    gone = np.arange(0, 100, dtype=np.uint64)
    assert client.delete("replicated", gone) == 100
    states = _replicas(client, "replicated")
    assert all(s[nodes.addresses[1]] == "dead" for s in states.values())
    assert client.get_collection("replicated").status == "yellow"

    nodes.restart(1)  # same address and data dir
    t0 = time.monotonic()
    _wait(lambda: all(set(s.values()) == {"active"} for s in _replicas(client, "replicated").values()), 60,
          "the restarted replica to catch up")
    caught_up = time.monotonic() - t0
    alive = set(range(100, 3500))
    nodes.kill(0)  # the caught-up replicas now serve alone
    try:
        _check_exact(client, "replicated", alive, set(range(100)))
    finally:
        nodes.restart(0)
    _ROWS["storm"] = ("One node of a replication_factor=2 collection SIGKILLed during a query storm; then "
                      "writes and deletes while it is down; then it restarts",
                      f"All {storm_n} searches of the storm answered with the exact results (failover within "
                      "the call). The 500 upserts and 100 deletes made while it was down were acknowledged "
                      "and marked its replicas dead (collection yellow). Restarted, it was caught up by the "
                      f"repair loop in {caught_up:.1f} s; with the other node then killed, it alone held "
                      "exactly the acknowledged points.", "none")


def test_refusals_are_clear(cluster, nodes):
    handle, client, admin = cluster
    client.create_collection("solo", DIM, "cosine", quantization="none", shard_number=1)
    (node,) = _replicas(client, "solo")[0]

    def code_of(call):
        with pytest.raises(grpc.RpcError) as exc:
            call()
        return exc.value.code(), exc.value.details()

    code, msg = code_of(lambda: admin.MoveShard(apb.MoveShardRequest(collection="solo", shard_id=0, from_node=node,
                                                                     to_node=node), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "same node" in msg
    code, msg = code_of(lambda: admin.MoveShard(apb.MoveShardRequest(collection="solo", shard_id=0, from_node=node,
                                                                     to_node="10.9.9.9:1"), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and "not registered" in msg
    code, msg = code_of(lambda: admin.DropReplica(apb.DropReplicaRequest(collection="solo", shard_id=0, node=node),
                                                  timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "last active replica" in msg
    code, msg = code_of(lambda: admin.MoveShard(apb.MoveShardRequest(collection="solo", shard_id=7, from_node=node,
                                                                     to_node=node), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and "shards 0 to 0" in msg
    code, msg = code_of(lambda: admin.AddNode(apb.AddNodeRequest(address="127.0.0.1:1"), timeout=30))
    assert code == grpc.StatusCode.UNAVAILABLE and "does not answer" in msg
    code, msg = code_of(lambda: admin.AddNode(apb.AddNodeRequest(address="no-port"), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, msg = code_of(lambda: admin.GetOperation(apb.GetOperationRequest(id="nope"), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND
    other = next(a for a in nodes.addresses[:2] if a != node)
    code, msg = code_of(lambda: admin.ReplicateShard(apb.ReplicateShardRequest(collection="solo", shard_id=0,
                                                                               to_node=node), timeout=10))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    # replicate, then the first replica may go
    op = admin.ReplicateShard(apb.ReplicateShardRequest(collection="solo", shard_id=0, to_node=other), timeout=10)
    assert _wait_op(admin, op.id).state == "done"
    admin.DropReplica(apb.DropReplicaRequest(collection="solo", shard_id=0, node=node), timeout=10)
    assert _replicas(client, "solo") == {0: {other: "active"}}


def test_rebalance_after_adding_a_node_and_restart_keeps_placement(cluster, nodes):
    handle, client, admin = cluster
    client.create_collection("spread", DIM, "dot", quantization="none", shard_number=6)
    ids = np.arange(2000, dtype=np.uint64)
    client.upsert_many("spread", ids, _hash_vectors(ids))
    q = _hash_vectors(np.array([424242], np.uint64))[0]
    before = client.search("spread", q, limit=20)
    assert {len(v) for v in _replicas(client, "spread").values()} == {1}
    admin.AddNode(apb.AddNodeRequest(address=nodes.addresses[2]), timeout=10)
    op = admin.Rebalance(apb.RebalanceRequest(), timeout=10)
    assert _wait_op(admin, op.id).state == "done"
    placement = _replicas(client, "spread")
    per_node = {a: sum(a in reps for reps in placement.values()) for a in nodes.addresses}
    assert sorted(per_node.values()) == [2, 2, 2]
    after = client.search("spread", q, limit=20)
    assert after.ids.tolist() == before.ids.tolist()
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-6)
    status = admin.ClusterStatus(apb.ClusterStatusRequest(), timeout=10)
    assert {n.address: n.shards for n in status.nodes} == per_node and all(n.healthy for n in status.nodes)

    handle.restart()
    assert _replicas(client, "spread") == placement
    assert client.count("spread") == 2000


def test_snapshot_then_restore_gives_the_same_results(cluster):
    handle, client, admin = cluster
    client.create_collection("snap", DIM, "cosine", quantization="binary", shard_number=2)
    ids = np.arange(4000, dtype=np.uint64)
    client.upsert_many("snap", ids, _hash_vectors(ids), payloads=[{"i": int(i)} for i in ids])
    queries = _hash_vectors(np.arange(7_000_000, 7_000_010, dtype=np.uint64))

    parts = list(admin.Snapshot(apb.SnapshotRequest(collection="snap"), timeout=60))
    assert parts[0].WhichOneof("part") == "header" and list(parts[0].header.shard_ids) == [0, 1]
    ends = [p.shard_end for p in parts if p.WhichOneof("part") == "shard_end"]
    assert [e.shard_id for e in ends] == [0, 1] and sum(e.points for e in ends) == 4000

    header = apb.SnapshotPart()
    header.CopyFrom(parts[0])
    header.header.restore_as = "snap2"
    info = admin.Restore(iter([header, *parts[1:]]), timeout=60)
    assert info.name == "snap2" and info.points_count == 4000
    for q in queries:
        a = client.search("snap", q, limit=10, oversampling=2.0, with_payload=True)
        b = client.search("snap2", q, limit=10, oversampling=2.0, with_payload=True)
        assert a.ids.tolist() == b.ids.tolist() and a.payloads == b.payloads
        np.testing.assert_array_equal(a.scores, b.scores)

    # a damaged snapshot is refused, and nothing is created
    bad = [apb.SnapshotPart() for _ in parts]
    for b, p in zip(bad, parts):
        b.CopyFrom(p)
    bad[0].header.restore_as = "snap3"
    chunk = next(b for b in bad if b.WhichOneof("part") == "chunk")
    chunk.chunk.data = bytes([chunk.chunk.data[0] ^ 1]) + chunk.chunk.data[1:]
    with pytest.raises(grpc.RpcError) as exc:
        admin.Restore(iter(bad), timeout=60)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "checksum" in exc.value.details()
    assert "snap3" not in client.list_collections()

    # one shard restored into an existing collection replaces just that shard
    client.delete("snap2", ids[:4000])
    assert client.count("snap2") == 0
    one = list(admin.Snapshot(apb.SnapshotRequest(collection="snap", shard_id=1), timeout=60))
    h = apb.SnapshotPart()
    h.CopyFrom(one[0])
    h.header.restore_as = "snap2"
    admin.Restore(iter([h, *one[1:]]), timeout=60)
    assert client.count("snap2") == next(e.points for e in ends if e.shard_id == 1)


def test_two_coordinators_over_etcd_share_collections_and_transfers(nodes, tmp_path, cluster_helpers,
                                                                    etcd_server):
    import uuid

    from coordinator.etcd import EtcdBackend
    from shard.errors import NotFound

    nodes.ensure_up()
    prefix = f"/quiver-test-{uuid.uuid4().hex[:8]}/"
    handles = [cluster_helpers[0](tmp_path / f"coord-{i}", nodes.addresses,
                                  metadata_factory=lambda: EtcdBackend(etcd_server.endpoint, prefix=prefix),
                                  shard_timeout=5.0, repair_interval=0.2) for i in range(2)]
    ca, cb = (Client(h.address, timeout=60) for h in handles)
    channel = grpc.insecure_channel(handles[0].address)
    admin_a = admin_pb2_grpc.QuiverAdminStub(channel)
    try:
        status = _wait(lambda: (lambda st: st if len(st.coordinators) == 2 else None)(
            admin_a.ClusterStatus(apb.ClusterStatusRequest(), timeout=10)), 10, "both coordinators registered")
        assert status.metadata_backend == "etcd"

        ca.create_collection("shared", DIM, "cosine", quantization="scalar", shard_number=2)
        _wait(lambda: "shared" in cb.list_collections(), 10, "coordinator B to see the collection")
        base = np.arange(3000, dtype=np.uint64)
        cb.upsert_many("shared", base, _hash_vectors(base))
        assert ca.count("shared") == 3000

        # A moves a shard while B writes: B must send writes to the target before the copy starts
        src = _replicas(ca, "shared")[0]
        (from_node,) = src
        to_node = next(a for a in nodes.addresses if a not in src and a not in _replicas(ca, "shared")[1])
        w, done = _move_while_writing(admin_a, cb, "shared", base, from_node, to_node, 200_000)
        assert done.state == "done", done.error
        _wait(lambda: _replicas(cb, "shared")[0] == {to_node: "active"}, 10, "B to see the switch")
        _check_exact(ca, "shared", w.alive, w.deleted)
        _check_exact(cb, "shared", w.alive, w.deleted)
        _ROWS["etcd"] = ("Two coordinators over one etcd: coordinator A moves a shard while a client writes "
                         "through coordinator B",
                         "B learned of the receiving replica through its watch and sent it every write before "
                         f"the copy began (the fence); {w.batches} batches went through B across the move "
                         f"without an error, and both coordinators then read exactly the {len(w.alive):,} "
                         "acknowledged ids. A restarted A read the new placement back from etcd.",
                         "none; nothing duplicated")

        handles[0].restart()  # a restarted coordinator reads placement back from etcd
        assert _replicas(ca, "shared")[0] == {to_node: "active"}

        cb.delete_collection("shared")
        _wait(lambda: "shared" not in ca.list_collections(), 10, "coordinator A to see the delete")
        with pytest.raises(NotFound):
            ca.count("shared")
    finally:
        ca.close()
        cb.close()
        channel.close()
        for h in handles:
            h.close()


def test_coordinator_killed_during_a_transfer_resumes_it(nodes, tmp_path):
    """SIGKILL the coordinator (a separate process) mid-copy; the restarted one adopts the
    operation, rolls the half-done transfer back and runs it again: nothing lost or duplicated."""
    from quiver.local import spawn, wait_port_file

    nodes.ensure_up()
    data, pf, log = tmp_path / "coord", tmp_path / "coord.port", tmp_path / "coord.log"

    def start(address: str):
        p = spawn("coordinator", ["--listen", address, "--data-dir", str(data), "--shard-nodes",
                                  ",".join(nodes.addresses), "--repair-interval", "0.2", "--grace", "2"], pf, log)
        return p, f"127.0.0.1:{wait_port_file(pf, p, timeout=120, log_file=log)['port']}"

    proc, address = start("127.0.0.1:0")
    client = Client(address, timeout=60)
    channel = grpc.insecure_channel(address)
    admin = admin_pb2_grpc.QuiverAdminStub(channel)
    try:
        client.create_collection("resumed", DIM, "cosine", quantization="none", shard_number=1)
        base = np.arange(60_000, dtype=np.uint64)
        client.upsert_many("resumed", base, _hash_vectors(base))
        (from_node,) = _replicas(client, "resumed")[0]
        to_node = next(a for a in nodes.addresses if a != from_node)
        op = admin.MoveShard(apb.MoveShardRequest(collection="resumed", shard_id=0, from_node=from_node,
                                                  to_node=to_node), timeout=10)
        _wait(lambda: admin.GetOperation(apb.GetOperationRequest(id=op.id), timeout=10).transfers[0].points_copied
              > 0, 30, "the copy to start")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

        proc, _ = start(address)  # same port and data dir
        done = _wait_op(admin, op.id, timeout=120)
        assert done.state == "done", done.error
        assert "operation adopted" in log.read_text() and "transfer attempt failed" not in log.read_text()
        more = np.arange(60_000, 60_500, dtype=np.uint64)
        client.upsert(("resumed"), more, _hash_vectors(more))
        assert _replicas(client, "resumed")[0] == {to_node: "active"}
        _check_exact(client, "resumed", set(range(60_500)), set())
        _ROWS["coordinator-kill"] = ("The coordinator process SIGKILLed in the middle of a shard move's copy "
                                     "(60,000 points), then restarted on the same port and data dir",
                                     "The restarted coordinator adopted the running operation from its "
                                     "metadata, rolled back the half-done copy (target replica removed and "
                                     "dropped) and ran the transfer again to the end; the collection then "
                                     "held exactly the 60,000 points plus 500 written after.",
                                     "none; nothing duplicated")
        client.delete_collection("resumed")
    finally:
        client.close()
        channel.close()
        from quiver.local import terminate
        terminate([proc.pid], timeout=10)


def test_removing_a_dead_node_copies_its_replicas_from_the_live_ones(cluster, nodes):
    handle, client, admin = cluster
    client.create_collection("survivor", DIM, "dot", quantization="scalar", shard_number=2, replication_factor=2)
    ids = np.arange(2500, dtype=np.uint64)
    client.upsert_many("survivor", ids, _hash_vectors(ids))
    admin.AddNode(apb.AddNodeRequest(address=nodes.addresses[2]), timeout=10)
    dead = nodes.addresses[1]
    nodes.kill(1)
    try:
        op = admin.RemoveNode(apb.RemoveNodeRequest(address=dead), timeout=10)
        done = _wait_op(admin, op.id)
        assert done.state == "done", done.error
        assert all(set(reps) == {nodes.addresses[0], nodes.addresses[2]} and set(reps.values()) == {"active"}
                   for reps in _replicas(client, "survivor").values())
        assert dead not in {n.address for n in admin.ListNodes(apb.ListNodesRequest(), timeout=10).nodes}
        nodes.kill(0)  # the new replicas alone hold everything
        try:
            assert client.count("survivor") == 2500
            got = client.get("survivor", ids, with_payload=False, with_vector=True)
            order = np.argsort(np.asarray(got.ids, np.uint64))
            np.testing.assert_allclose(got.vectors[order], _hash_vectors(ids), rtol=1e-6)
        finally:
            nodes.restart(0)
    finally:
        nodes.restart(1)
    # back, the node still holds its old replicas' files: once registered again, the
    # orphan sweep drops them (so a new collection of that name can be placed there)
    from quiver.v1 import shard_node_pb2, shard_node_pb2_grpc
    admin.AddNode(apb.AddNodeRequest(address=dead), timeout=10)

    def leftovers():
        with grpc.insecure_channel(dead) as ch:
            listed = shard_node_pb2_grpc.ShardNodeStub(ch).ListShards(shard_node_pb2.ListShardsRequest(), timeout=10)
        return [s.shard.collection for s in listed.shards if s.shard.collection == "survivor"]

    _wait(lambda: not leftovers(), 30, "the orphan sweep")
    _ROWS["dead-node"] = ("A node holding one replica of each shard SIGKILLed, then removed with the admin "
                          "service (its replicas must be copied from the live ones)",
                          "The removal drained it: each of its replicas was copied from the other replica to "
                          "the third node and switched; the node left the registry. With the remaining "
                          "original node killed too, the new replicas alone held all 2,500 points. When the "
                          "removed node came back and was added again, the orphan sweep dropped the files it "
                          "had kept.", "none")


def test_a_coordinator_whose_etcd_lease_lapses_refuses_writes_until_it_re_registers(nodes, tmp_path,
                                                                                    cluster_helpers, etcd_server):
    """Other coordinators stop waiting for one whose lease is gone, so it must not route writes
    on metadata it may have missed; it re-registers (new lease, full reload) and writes again."""
    import uuid

    from coordinator.etcd import EtcdBackend
    from shard.errors import Unavailable

    nodes.ensure_up()
    prefix = f"/quiver-test-{uuid.uuid4().hex[:8]}/"
    h = cluster_helpers[0](tmp_path / "coord", nodes.addresses[:2],
                           metadata_factory=lambda: EtcdBackend(etcd_server.endpoint, prefix=prefix))
    c = Client(h.address, timeout=30)
    try:
        c.create_collection("leased", DIM, "dot", quantization="none", shard_number=1)
        ids = np.arange(10, dtype=np.uint64)
        c.upsert("leased", ids, _hash_vectors(ids))
        meta = h.coordinator.meta
        old = meta._lease

        async def revoke():  # what etcd does to a lease nobody renewed in time
            other = EtcdBackend(etcd_server.endpoint, prefix=prefix)
            try:
                await other.revoke_lease(old)
            finally:
                await other.close()

        h.loop.run(revoke())
        _wait(lambda: meta._lease != old and not meta.suspended, 15, "the coordinator to re-register")
        assert meta.id in meta.coordinators  # registered again, under the new lease

        h.loop.run(_set(meta, suspended=True))  # while it is out: writes refused, reads still served
        with pytest.raises(Unavailable, match="registration"):
            c.upsert("leased", ids, _hash_vectors(ids))
        assert c.count("leased") == 10
        h.loop.run(_set(meta, suspended=False))
        c.upsert("leased", ids + np.uint64(10), _hash_vectors(ids + np.uint64(10)))
        assert c.count("leased") == 20
        c.delete_collection("leased")
    finally:
        c.close()
        h.close()


async def _set(obj, **fields):
    for k, v in fields.items():
        setattr(obj, k, v)
