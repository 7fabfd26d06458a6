"""`quiver admin ...` end to end: shard nodes as processes, an in-process coordinator,
the CLI through click's CliRunner (in process, real channels).

Tests that need the QuiverAdmin service skip (with the reason) while the
coordinator answers its methods with UNIMPLEMENTED.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile

import grpc
import numpy as np
import pytest
from click.testing import CliRunner

from quiver import snapshot_file
from quiver.admin_cli import admin
from quiver.cli import main
from quiver.v1 import admin_pb2 as apb
from quiver.v1 import quiver_pb2 as pb

DIM = 16
N = 600
ADMIN_KEY = "admin-key-0123456789abcdef"
READ_KEY = "read-key-0123456789abcdef"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, cluster_helpers):
    """Three shard-node processes; the coordinator starts with the first two."""
    _, start, stop = cluster_helpers
    started = start(tmp_path_factory.mktemp("admin-nodes"), 3)
    yield started
    stop(started)


@pytest.fixture(scope="module")
def coord(nodes, tmp_path_factory, cluster_helpers):
    handle_cls = cluster_helpers[0]
    h = handle_cls(tmp_path_factory.mktemp("admin-coord"), [n.address for n in nodes[:2]], shard_timeout=30.0)
    yield h
    h.close()


@pytest.fixture(scope="module")
def cli(coord):
    """cli(*args, input=None) -> click Result, against the module's coordinator."""
    runner = CliRunner()

    def run(*args, input=None, address=None):
        env = {"QUIVER_ADDRESS": address or coord.address, "QUIVER_API_KEY": None, "QUIVER_TIMEOUT": "30"}
        return runner.invoke(main, ["admin", *args], input=input, env=env, catch_exceptions=False)

    return run


@pytest.fixture(scope="module")
def qclient(coord):
    from quiver.client import Client

    c = Client(coord.address, timeout=60)
    yield c
    c.close()


@pytest.fixture(scope="module")
def admin_api(coord):
    """Skip when the coordinator does not serve QuiverAdmin yet."""
    from quiver.v1 import admin_pb2_grpc

    ch = grpc.insecure_channel(coord.address)
    try:
        admin_pb2_grpc.QuiverAdminStub(ch).ListNodes(apb.ListNodesRequest(), timeout=10)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNIMPLEMENTED:
            pytest.skip("the coordinator does not serve QuiverAdmin yet")
        raise
    finally:
        ch.close()


def _fill(qclient, name: str, shards: int, seed: int = 0, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    qclient.create_collection(name, DIM, "cosine", quantization="scalar", shard_number=shards)
    qclient.upsert_many(name, np.arange(n, dtype=np.uint64), x, [{"i": i} for i in range(n)])
    return x


def _json(result):
    assert result.exit_code == 0, (result.exit_code, result.output)
    return json.loads(result.stdout)


def _placement(cli, name: str) -> dict[int, list[tuple[str, str]]]:
    info = _json(cli("collections", "describe", name, "--json"))
    out: dict[int, list[tuple[str, str]]] = {}
    for r in info["replicas"]:
        out.setdefault(r["shard_id"], []).append((r["node"], r["state"]))
    return {k: sorted(v) for k, v in out.items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leaf_commands(group, path=()):
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            yield from _leaf_commands(cmd, (*path, name))
        else:
            yield (*path, name)


# ------------------------------------------------------- without the servicer


def test_help_documents_exit_codes_and_every_command_has_help():
    runner = CliRunner()
    top = runner.invoke(main, ["admin", "--help"])
    assert top.exit_code == 0
    for code in ("0  ok", "1  aborted", "2  usage", "3  refused", "4  unreachable", "5  not allowed"):
        assert code in top.output
    leaves = list(_leaf_commands(admin))
    assert len(leaves) == 16, leaves
    for path in leaves:
        r = runner.invoke(main, ["admin", *path, "--help"])
        assert r.exit_code == 0, (path, r.output)
        for opt in ("--address", "--api-key", "--tls-ca", "--timeout", "--json"):
            assert opt in r.output, (path, opt)


def test_collections_create_list_describe_drop(cli):
    r = cli("collections", "create", "cfg", "--dim", str(DIM), "--distance", "dot", "--quantization", "scalar",
            "--quantile", "0.95", "--seed", "7", "--full-scan-threshold", "100", "--nlist", "8", "--nprobe", "3",
            "--train-sample", "300", "--retrain-growth", "3.5", "--scan-factor", "50", "--shards", "2",
            "--replication-factor", "1", "--write-consistency", "1", "--json")
    info = _json(r)
    assert info["name"] == "cfg" and info["dimension"] == DIM and info["distance"] == "dot"
    assert info["quantization"]["kind"] == "scalar" and info["quantization"]["quantile"] == pytest.approx(0.95)
    assert info["quantization"]["seed"] == 7
    assert info["index"] == {"full_scan_threshold": 100, "nlist": 8, "nprobe": 3, "train_sample": 300,
                             "retrain_growth": 3.5, "scan_factor": 50}
    assert info["shard_number"] == 2 and info["write_consistency"] == 1
    assert sorted({r["shard_id"] for r in info["replicas"]}) == [0, 1]

    r = cli("collections", "create", "bin", "--dim", "8", "--quantization", "binary", "--binary-encoding",
            "two_bits", "--query-encoding", "scalar8bits", "--shards", "1")
    assert r.exit_code == 0, r.output
    assert "encoding=two_bits" in r.stdout and "query_encoding=scalar8bits" in r.stdout
    r = cli("collections", "create", "pq", "--dim", "8", "--quantization", "product", "--compression", "x8",
            "--json")
    assert _json(r)["quantization"]["compression"] == "x8"
    r = cli("collections", "create", "graph", "--dim", "8", "--quantization", "scalar", "--hnsw", "--hnsw-m", "8",
            "--hnsw-ef-construct", "40", "--hnsw-ef", "32", "--json")
    assert _json(r)["index"]["hnsw"] == {"m": 8, "ef_construct": 40, "ef": 32, "rebuild_deleted": 0.25}
    assert cli("collections", "create", "nograph", "--dim", "8", "--hnsw-m", "8").exit_code == 2
    assert cli("collections", "drop", "graph", "--yes").exit_code == 0

    assert {"cfg", "bin", "pq"} <= set(cli("collections", "list").stdout.split())
    assert {"cfg", "bin", "pq"} <= set(_json(cli("collections", "list", "--json")))

    r = cli("collections", "describe", "cfg")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("collection cfg: ")
    header = next(line for line in lines if line.startswith("COLLECTION"))
    assert header.split() == ["COLLECTION", "SHARD", "NODE", "STATE", "AVAILABLE", "POINTS", "RAM", "DISK", "ERROR"]

    r = cli("collections", "drop", "cfg", input="n\n")
    assert r.exit_code == 1 and "aborted" in r.stderr
    assert "cfg" in cli("collections", "list", "--json").stdout
    r = cli("collections", "drop", "cfg", input="y\n")
    assert r.exit_code == 0 and "dropped cfg" in r.stdout
    for name in ("bin", "pq"):
        assert cli("collections", "drop", name, "--yes").exit_code == 0
    assert not {"cfg", "bin", "pq"} & set(_json(cli("collections", "list", "--json")))


def test_errors_map_to_exit_codes(cli):
    r = cli("collections", "describe", "no_such_collection")
    assert r.exit_code == 3 and r.stderr.startswith("error: ") and "no_such_collection" in r.stderr
    assert cli("collections", "create", "dup", "--dim", "4", "--shards", "1").exit_code == 0
    r = cli("collections", "create", "dup", "--dim", "4")
    assert r.exit_code == 3 and "error: " in r.stderr
    assert cli("collections", "drop", "dup", "--yes").exit_code == 0
    r = cli("collections", "create", "bad name!", "--dim", "4")
    assert r.exit_code == 3
    # usage errors are click's exit 2
    assert cli("collections", "create", "x", "--dim", "0").exit_code == 2
    assert cli("collections", "create", "x", "--dim", "4", "--quantization", "fancy").exit_code == 2
    assert cli("shards", "move", "c", "0", "--to", "a:1").exit_code == 2  # --from missing
    assert cli("shards", "move", "c", "-1", "--from", "a:1", "--to", "b:1").exit_code == 2
    # nothing listening: UNAVAILABLE is exit 4, and the key is never echoed
    runner = CliRunner()
    r = runner.invoke(main, ["admin", "collections", "list", "--address", f"127.0.0.1:{_free_port()}",
                             "--timeout", "5"], env={"QUIVER_API_KEY": ADMIN_KEY})
    assert r.exit_code == 4 and r.stderr.startswith("error: ")
    assert ADMIN_KEY not in r.output


def test_confirmations_abort_before_any_call(cli):
    r = cli("shards", "drop-replica", "whatever", "0", "--node", "a:1", input="n\n")
    assert r.exit_code == 1 and "aborted" in r.stderr
    r = cli("collections", "drop", "whatever", input="\n")  # the default is no
    assert r.exit_code == 1 and "aborted" in r.stderr


def test_api_keys_unauthenticated_is_exit_5(nodes, tmp_path, cluster_helpers):
    from quiver import security

    keys = security.load_api_keys(admin=ADMIN_KEY, read=READ_KEY)
    h = cluster_helpers[0](tmp_path / "c", [n.address for n in nodes[:2]], server_kw={"api_keys": keys})
    try:
        runner = CliRunner()
        base = ["admin", "collections", "list", "--address", h.address, "--timeout", "10"]
        r = runner.invoke(main, base, env={"QUIVER_API_KEY": None})
        assert r.exit_code == 5 and r.stderr.startswith("error: ")
        r = runner.invoke(main, base, env={"QUIVER_API_KEY": "wrong-key-0123456789abcdef"})
        assert r.exit_code == 5 and "wrong-key" not in r.output
        r = runner.invoke(main, base + ["--json"], env={"QUIVER_API_KEY": ADMIN_KEY})
        assert r.exit_code == 0, r.output
        assert ADMIN_KEY not in r.output
        r = runner.invoke(main, ["admin", "collections", "create", "k", "--dim", "4", "--address", h.address],
                          env={"QUIVER_API_KEY": READ_KEY})
        assert r.exit_code == 5 and "read-only" in r.stderr and READ_KEY not in r.output
        r = runner.invoke(main, ["admin", "status", "--address", h.address], env={"QUIVER_API_KEY": READ_KEY})
        assert r.exit_code == 5 and "read-only" in r.stderr and READ_KEY not in r.output
        r = runner.invoke(main, ["admin", "status", "--address", h.address, "--json"],
                          env={"QUIVER_API_KEY": ADMIN_KEY})
        assert r.exit_code == 0 and ADMIN_KEY not in r.output
    finally:
        h.close()


def _fake_parts(shards: dict[int, bytes], *, bad_sha_for: int | None = None):
    yield apb.SnapshotPart(header=apb.SnapshotHeader(format_version=1, collection="fake", collection_json="{}",
                                                     shard_ids=list(shards), created_at="2026-01-01T00:00:00Z"))
    for sid, data in shards.items():
        for i in range(0, len(data), 1000):
            yield apb.SnapshotPart(chunk=apb.SnapshotData(shard_id=sid, data=data[i:i + 1000]))
        digest = hashlib.sha256(data).hexdigest()
        if sid == bad_sha_for:
            digest = hashlib.sha256(b"something else").hexdigest()
        yield apb.SnapshotPart(shard_end=apb.SnapshotShardEnd(shard_id=sid, size=len(data), sha256=digest,
                                                              points=len(data) // 10))


def test_snapshot_file_format_and_local_refusals(cli, tmp_path):
    shards = {0: bytes(range(256)) * 20, 3: b"\x07" * 3001}
    path = tmp_path / "fake.tar"
    manifest = snapshot_file.write(_fake_parts(shards), path)
    assert not (tmp_path / "fake.tar.partial").exists()
    with tarfile.open(path) as tar:
        assert tar.getnames() == ["snapshot.json", "shard-0.mdb", "shard-3.mdb"]
        meta = json.loads(tar.extractfile("snapshot.json").read())
        assert meta["collection"] == "fake" and meta["shard_ids"] == [0, 3] and meta["format_version"] == 1
        assert [(f["name"], f["size"], f["sha256"]) for f in meta["files"]] == [
            (f"shard-{s}.mdb", len(d), hashlib.sha256(d).hexdigest()) for s, d in shards.items()]
        assert tar.extractfile("shard-3.mdb").read() == shards[3]
    assert snapshot_file.verify(path) == manifest

    # a stream whose data does not match its shard_end: an error, and no file left
    bad = tmp_path / "bad.tar"
    with pytest.raises(snapshot_file.SnapshotStreamError, match="SHA-256"):
        snapshot_file.write(_fake_parts(shards, bad_sha_for=3), bad)
    assert not bad.exists() and not (tmp_path / "bad.tar.partial").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["fake.tar"]  # no spool left either

    # one flipped byte in a shard file: restore refuses before sending anything
    raw = bytearray(path.read_bytes())
    off = raw.index(bytes(range(256)))
    raw[off + 5] ^= 0xFF
    corrupt = tmp_path / "corrupt.tar"
    corrupt.write_bytes(bytes(raw))
    r = cli("restore", str(corrupt), "--as", "never")
    assert r.exit_code == 3 and "shard-0.mdb does not match its checksum" in r.stderr
    # not a tar at all, a truncated one, a missing file
    (tmp_path / "junk.tar").write_bytes(b"hello" * 100)
    r = cli("restore", str(tmp_path / "junk.tar"))
    assert r.exit_code == 3 and "not a snapshot file" in r.stderr
    (tmp_path / "short.tar").write_bytes(path.read_bytes()[:3000])
    assert cli("restore", str(tmp_path / "short.tar")).exit_code == 3
    r = cli("restore", str(tmp_path / "missing.tar"))
    assert r.exit_code == 3 and "no such file" in r.stderr
    assert "never" not in cli("collections", "list", "--json").stdout


# ---------------------------------------------------------- with the servicer


def test_status_table_and_json(cli, qclient, nodes, admin_api):
    _fill(qclient, "st", shards=2, n=200)
    st = _json(cli("status", "--json"))
    assert sorted(n["address"] for n in st["nodes"]) == sorted(n.address for n in nodes[:2])
    assert all(n["healthy"] and n["state"] == "active" for n in st["nodes"])
    assert sum(n["points"] for n in st["nodes"]) >= 200
    assert st["metadata_backend"] in ("lmdb", "etcd")
    (c,) = [c for c in st["collections"] if c["name"] == "st"]
    assert c["points"] == 200 and sorted({r["shard_id"] for r in c["replicas"]}) == [0, 1]
    assert {r["node"] for r in c["replicas"]} <= {n.address for n in nodes[:2]}
    assert isinstance(st["operations"], list)

    r = cli("status")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "metadata backend: " in out
    assert "ADDRESS" in out and "HEALTHY" in out and "RAM" in out and "DISK" in out
    assert "shard placement:" in out and "st " in out
    for n in nodes[:2]:
        assert n.address in out
    assert any(u in out for u in ("KiB", "MiB", " B"))
    assert cli("collections", "drop", "st", "--yes").exit_code == 0


def test_nodes_list_and_add(cli, nodes, admin_api):
    listed = _json(cli("nodes", "list", "--json"))
    assert sorted(n["address"] for n in listed) == sorted(n.address for n in nodes[:2])
    table = cli("nodes", "list").stdout.splitlines()
    assert table[0].split()[:4] == ["ADDRESS", "STATE", "HEALTHY", "SHARDS"] and len(table) == 3

    dead = f"127.0.0.1:{_free_port()}"
    r = cli("nodes", "add", dead)
    assert r.exit_code in (3, 4) and r.stderr.startswith("error: ") and dead in r.stderr, r.output
    assert dead not in cli("nodes", "list", "--json").stdout
    r = cli("nodes", "add", "not an address")
    assert r.exit_code == 3, r.output

    r = cli("nodes", "add", dead, "--allow-unreachable", "--json")
    node = _json(r)
    assert node["address"] == dead and not node["healthy"]
    assert dead in cli("nodes", "list", "--json").stdout
    # it holds nothing: removing it ends at once
    r = cli("nodes", "remove", dead, "--timeout", "20")
    assert r.exit_code == 0, r.output
    assert dead not in cli("nodes", "list", "--json").stdout


def test_move_replicate_drop_replica(cli, qclient, nodes, admin_api):
    x = _fill(qclient, "mv", shards=2, seed=1)
    before = qclient.search_batch("mv", x[:5], limit=5)
    place = _placement(cli, "mv")
    (src, _), = place[0]
    dst = next(n.address for n in nodes[:2] if n.address != src)

    r = cli("shards", "move", "mv", "0", "--from", src, "--to", src)
    assert r.exit_code == 3 and r.stderr.startswith("error: "), r.output

    r = cli("shards", "move", "mv", "0", "--from", src, "--to", dst, "--json")
    op = _json(r)
    assert op["state"] == "done" and op["kind"] == "move"
    assert op["transfers"] and op["transfers"][0]["to_node"] == dst
    assert _placement(cli, "mv")[0] == [(dst, "active")]
    assert qclient.count("mv") == N
    after = qclient.search_batch("mv", x[:5], limit=5)
    for a, b in zip(before, after):
        assert a.ids.tolist() == b.ids.tolist()

    shown = _json(cli("operations", "show", op["id"], "--json"))
    assert shown["id"] == op["id"] and shown["state"] == "done"
    assert op["id"] in [o["id"] for o in _json(cli("operations", "list", "--json"))]
    assert "ID" in cli("operations", "list").stdout
    assert cli("operations", "show", "no-such-operation").exit_code == 3

    # the only replica of a shard cannot be dropped
    r = cli("shards", "drop-replica", "mv", "0", "--node", dst, "--yes")
    assert r.exit_code == 3 and r.stderr.startswith("error: "), r.output

    # copy it back to src without waiting, then wait through `operations show --wait`
    op = _json(cli("shards", "replicate", "mv", "0", "--to", src, "--no-wait", "--json"))
    assert op["kind"] == "replicate" and op["state"] in ("running", "done")
    r = cli("operations", "show", op["id"], "--wait")
    assert r.exit_code == 0 and ": done" in r.stdout.splitlines()[0], r.output
    assert _placement(cli, "mv")[0] == sorted([(src, "active"), (dst, "active")])

    r = cli("shards", "drop-replica", "mv", "0", "--node", dst, "--yes")
    assert r.exit_code == 0, r.output
    assert _placement(cli, "mv")[0] == [(src, "active")]
    assert qclient.count("mv") == N
    assert cli("collections", "drop", "mv", "--yes").exit_code == 0


def test_rebalance_onto_a_third_node(cli, qclient, nodes, admin_api):
    _fill(qclient, "rb", shards=4, seed=2, n=400)
    third = nodes[2].address
    assert all(node != third for reps in _placement(cli, "rb").values() for node, _ in reps)
    r = cli("nodes", "add", third, "--json")
    assert _json(r)["healthy"] is True

    r = cli("shards", "rebalance", "--collection", "rb")
    assert r.exit_code == 0, r.output
    assert "(rebalance): done" in r.stdout
    per_node: dict[str, int] = {}
    for reps in _placement(cli, "rb").values():
        assert len(reps) == 1
        per_node[reps[0][0]] = per_node.get(reps[0][0], 0) + 1
    assert per_node.get(third, 0) >= 1 and max(per_node.values()) <= 2, per_node
    assert qclient.count("rb") == 400

    # draining the third node moves its replicas back, then forgets it
    r = cli("nodes", "remove", third)
    assert r.exit_code == 0 and "(remove-node): done" in r.stdout, r.output
    assert third not in cli("nodes", "list", "--json").stdout
    assert all(node != third for reps in _placement(cli, "rb").values() for node, _ in reps)
    assert qclient.count("rb") == 400
    assert cli("collections", "drop", "rb", "--yes").exit_code == 0


def test_snapshot_then_restore_as_another_name(cli, qclient, admin_api, tmp_path):
    x = _fill(qclient, "snap", shards=2, seed=3)
    out = tmp_path / "snap.tar"
    r = cli("snapshot", "snap", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert out.exists() and not (tmp_path / "snap.tar.partial").exists()
    manifest = snapshot_file.verify(out)
    assert manifest.collection == "snap" and sorted(manifest.shard_ids) == [0, 1]
    assert sum(f.points for f in manifest.files) == N
    assert cli("snapshot", "snap", "--out", str(out)).exit_code == 3  # exists, no --force
    r = cli("snapshot", "no_such", "--out", str(tmp_path / "x.tar"))
    assert r.exit_code == 3 and not (tmp_path / "x.tar").exists() and not (tmp_path / "x.tar.partial").exists()
    assert cli("snapshot", "snap", "--out", str(tmp_path / "y.tar"), "--shard", "7").exit_code == 3

    r = cli("restore", str(out), "--as", "snap_copy", "--json")
    info = _json(r)
    assert info["name"] == "snap_copy" and info["points"] == N and info["shard_number"] == 2
    a = qclient.search_batch("snap", x[:8], limit=10, with_payload=True)
    b = qclient.search_batch("snap_copy", x[:8], limit=10, with_payload=True)
    for ra, rb in zip(a, b):
        assert ra.ids.tolist() == rb.ids.tolist()
        np.testing.assert_allclose(ra.scores, rb.scores, atol=1e-6)
        assert ra.payloads == rb.payloads
    # restoring over an existing name is refused
    assert cli("restore", str(out)).exit_code == 3

    # one shard only
    one = tmp_path / "one.tar"
    r = cli("snapshot", "snap", "--out", str(one), "--shard", "1", "--json")
    meta = _json(r)
    assert meta["shard_ids"] == [1] and [f["name"] for f in meta["files"]] == ["shard-1.mdb"]

    # the real file, corrupted: refused locally, nothing restored
    raw = bytearray(out.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        member = tar.getmember("shard-0.mdb")
    raw[member.offset_data + member.size // 2] ^= 0x01
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(raw))
    r = cli("restore", str(bad), "--as", "snap_bad")
    assert r.exit_code == 3 and "does not match its checksum" in r.stderr
    assert "snap_bad" not in _json(cli("collections", "list", "--json"))
    for name in ("snap", "snap_copy"):
        assert cli("collections", "drop", name, "--yes").exit_code == 0


# ------------------------------------------- against a stand-in QuiverAdmin server
# Paths the real cluster does not take on demand: an operation that fails, a
# Snapshot stream whose bytes do not match its checksum.


class _FakeAdmin:
    def __init__(self):
        from quiver.v1 import admin_pb2_grpc

        class Servicer(admin_pb2_grpc.QuiverAdminServicer):
            polls = 0

            def MoveShard(self, request, context):
                return apb.Operation(id="op-1", kind="move", state="running", transfers=[apb.Transfer(
                    collection=request.collection, shard_id=request.shard_id, from_node=request.from_node,
                    to_node=request.to_node, move=True, state="copying", points_total=10)])

            def GetOperation(self, request, context):
                if request.id != "op-1":
                    context.abort(grpc.StatusCode.NOT_FOUND, f"no operation {request.id}")
                Servicer.polls += 1
                state = "running" if Servicer.polls < 3 else "failed"
                return apb.Operation(id="op-1", kind="move", state=state,
                                     error="target node went away" if state == "failed" else "")

            def Snapshot(self, request, context):
                yield from _fake_parts({0: b"abc" * 1000}, bad_sha_for=0)

            def ListNodes(self, request, context):
                context.abort(grpc.StatusCode.INTERNAL, "boom")

            def Restore(self, request_iterator, context):
                parts = list(request_iterator)
                Servicer.restored = parts
                head = parts[0].header
                return pb.CollectionInfo(name=head.restore_as or head.collection, dimension=4,
                                         shard_number=len(head.shard_ids))

        from concurrent import futures

        self.servicer = Servicer
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        admin_pb2_grpc.add_QuiverAdminServicer_to_server(Servicer(), self.server)
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()


@pytest.fixture(scope="module")
def fake_admin():
    f = _FakeAdmin()
    yield f
    f.server.stop(0)


def test_failed_operation_exits_1_with_its_error(fake_admin):
    runner = CliRunner()
    r = runner.invoke(main, ["admin", "shards", "move", "c", "0", "--from", "a:1", "--to", "b:1",
                             "--address", fake_admin.address, "--timeout", "10"])
    assert r.exit_code == 1 and "error: operation op-1 failed: target node went away" in r.stderr
    assert fake_admin.servicer.polls == 3
    r = runner.invoke(main, ["admin", "shards", "move", "c", "0", "--from", "a:1", "--to", "b:1", "--no-wait",
                             "--json", "--address", fake_admin.address])
    assert r.exit_code == 0 and json.loads(r.stdout)["state"] == "running"
    r = runner.invoke(main, ["admin", "operations", "show", "nope", "--address", fake_admin.address])
    assert r.exit_code == 3 and "no operation nope" in r.stderr
    r = runner.invoke(main, ["admin", "nodes", "list", "--address", fake_admin.address])
    assert r.exit_code == 6 and "boom" in r.stderr
    r = runner.invoke(main, ["admin", "status", "--address", fake_admin.address])  # UNIMPLEMENTED
    assert r.exit_code == 6


def test_snapshot_stream_mismatch_leaves_no_file(fake_admin, tmp_path):
    out = tmp_path / "s.tar"
    r = CliRunner().invoke(main, ["admin", "snapshot", "c", "--out", str(out), "--address", fake_admin.address])
    assert r.exit_code == 6 and "SHA-256" in r.stderr, r.output
    assert list(tmp_path.iterdir()) == []


def test_restore_streams_header_chunks_and_shard_ends(fake_admin, tmp_path):
    shards = {2: np.random.default_rng(0).bytes((5 << 20) // 2), 5: b""}
    path = tmp_path / "big.tar"
    snapshot_file.write(_fake_parts(shards), path)
    r = CliRunner().invoke(main, ["admin", "restore", str(path), "--as", "copy", "--json",
                                  "--address", fake_admin.address])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["name"] == "copy"
    parts = fake_admin.servicer.restored
    kinds = [p.WhichOneof("part") for p in parts]
    assert kinds == ["header", "chunk", "chunk", "chunk", "shard_end", "shard_end"]
    assert parts[0].header.restore_as == "copy" and parts[0].header.collection == "fake"
    assert list(parts[0].header.shard_ids) == [2, 5]
    assert all(len(p.chunk.data) <= 1 << 20 for p in parts if p.HasField("chunk"))
    assert b"".join(p.chunk.data for p in parts if p.HasField("chunk")) == shards[2]
    ends = [p.shard_end for p in parts if p.HasField("shard_end")]
    assert [(e.shard_id, e.size, e.sha256) for e in ends] == [
        (s, len(d), hashlib.sha256(d).hexdigest()) for s, d in shards.items()]


def test_the_installed_entry_point():
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("quiver")
    r = subprocess.run([str(exe), "admin", "collections", "drop", "x", "--address", f"127.0.0.1:{_free_port()}"],
                       input="n\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "aborted" in r.stderr
