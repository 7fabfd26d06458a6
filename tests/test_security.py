"""Security: API keys with roles, TLS to the coordinator and to the shard nodes, a
cluster secret to shard nodes.

A real cluster as processes on 127.0.0.1 (two shard nodes and a coordinator, all
started with the security flags: every port serves TLS, the coordinator verifies the
nodes' certificate and the nodes the coordinator's: mutual TLS), self-signed
certificates made with the ``openssl`` command, and the key checks' unit tests.
"""

from __future__ import annotations

import hmac
import json
import logging
from pathlib import Path
from unittest import mock

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quiver import security
from quiver.client import Client
from quiver.local import spawn, terminate, wait_port_file
from quiver.v1 import shard_node_pb2 as spb
from quiver.v1 import shard_node_pb2_grpc as spb_grpc
from shard.errors import PermissionDenied, Unauthenticated
from tls_util import self_signed

ADMIN_KEY = "admin-key-0123456789abcdef"
READ_KEY = "read-key-0123456789abcdef"
WRONG_KEY = "wrong-key-feedfacecafebeef42"
SECRET = "cluster-secret-0123456789abcdef"
WRONG_SECRET = "cluster-secret-not-the-right-one"


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.cert, self.key = self_signed(root)  # for localhost and 127.0.0.1: its own CA
        (root / "coordinator-client").mkdir()
        # the certificate the coordinator presents to the nodes (its own CA: the nodes trust it)
        self.client_cert, self.client_key = self_signed(root / "coordinator-client", "DNS:quiver-coordinator")
        (root / "app").mkdir()
        # an application's certificate, which the coordinator requires (its own CA: trusted by it)
        self.app_cert, self.app_key = self_signed(root / "app", "DNS:quiver-app")
        (root / "keys.txt").write_text(f"# test keys\n{ADMIN_KEY} admin\n\n{READ_KEY} read\n")
        (root / "secret").write_text(SECRET + "\n")
        self.procs, self.logs = [], []
        secret = ["--cluster-secret-file", str(root / "secret")]
        nodes = []
        for i in range(2):
            log = root / f"node-{i}.log"
            p = spawn("shard-node", ["--listen", "127.0.0.1:0", "--data-dir", str(root / f"node-{i}"),
                                     "--grace", "2", "--tls-cert", str(self.cert), "--tls-key", str(self.key),
                                     "--tls-client-ca", str(self.client_cert), "--health-port", "0", *secret],
                      root / f"node-{i}.port", log)
            self.procs.append(p)
            self.logs.append(log)
            nodes.append((p, log, root / f"node-{i}.port"))
        infos = [wait_port_file(pf, p, 120, log) for p, log, pf in nodes]
        self.nodes = [f"127.0.0.1:{info['port']}" for info in infos]
        self.node_health = [f"127.0.0.1:{info['health_port']}" for info in infos]
        log = root / "coordinator.log"
        p = spawn("coordinator", ["--listen", "127.0.0.1:0", "--data-dir", str(root / "coord"), "--grace", "2",
                                  "--shard-nodes", ",".join(self.nodes), "--api-keys-file", str(root / "keys.txt"),
                                  "--tls-cert", str(self.cert), "--tls-key", str(self.key), "--health-port", "0",
                                  "--tls-client-ca", str(self.app_cert), "--shard-tls-ca", str(self.cert), "--shard-tls-cert", str(self.client_cert),
                                  "--shard-tls-key", str(self.client_key), *secret], root / "coord.port", log)
        self.procs.append(p)
        self.logs.append(log)
        info = wait_port_file(root / "coord.port", p, 120, log)
        self.address = f"127.0.0.1:{info['port']}"
        self.health_address = f"127.0.0.1:{info['health_port']}"

    def node_credentials(self) -> grpc.ChannelCredentials:
        """What the coordinator calls the nodes with: their CA and its client certificate."""
        return grpc.ssl_channel_credentials(self.cert.read_bytes(), private_key=self.client_key.read_bytes(),
                                            certificate_chain=self.client_cert.read_bytes())

    def client(self, api_key: str | None = None, **kw) -> Client:
        return Client(self.address, timeout=60, api_key=api_key, tls=True, ca_cert=self.cert,
                      tls_cert=self.app_cert, tls_key=self.app_key, **kw)

    def close(self) -> None:
        terminate([p.pid for p in self.procs], timeout=10)
        for p in self.procs:
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("secure"))
    try:
        with c.client(ADMIN_KEY) as admin:
            admin.create_collection("docs", 8, "cosine", quantization="scalar", shard_number=2)
            x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
            admin.upsert("docs", np.arange(50, dtype=np.uint64), x, [{"i": i} for i in range(50)])
        c.vectors = x
        yield c
    finally:
        c.close()


# ------------------------------------------------------------------ the cluster


def test_health_needs_no_key(cluster):
    creds = grpc.ssl_channel_credentials(cluster.cert.read_bytes(), private_key=cluster.app_key.read_bytes(),
                                         certificate_chain=cluster.app_cert.read_bytes())
    with grpc.secure_channel(cluster.address, creds) as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert r.status == health_pb2.HealthCheckResponse.SERVING
    # the plaintext health-only ports (the kubelet's gRPC probes speak no TLS) of the
    # coordinator and of the shard nodes: probes carry no key or secret
    for address in (cluster.health_address, *cluster.node_health):
        with grpc.insecure_channel(address) as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert r.status == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(cluster.health_address) as ch:  # health only: nothing else is served there
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/quiver.v1.Quiver/ListCollections")(b"", metadata=[("x-api-key", ADMIN_KEY)], timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with grpc.insecure_channel(cluster.node_health[0]) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/quiver.v1.ShardNode/ListShards")(
                b"", metadata=[("x-quiver-cluster-secret", SECRET)], timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_no_key_or_a_wrong_key_is_unauthenticated(cluster):
    with cluster.client() as c:
        with pytest.raises(Unauthenticated, match="no API key"):
            c.list_collections()
        with pytest.raises(Unauthenticated):
            c.search("docs", cluster.vectors[0], limit=3)
    with cluster.client(WRONG_KEY) as c:
        with pytest.raises(Unauthenticated, match="unknown API key") as e:
            c.count("docs")
        assert WRONG_KEY not in str(e.value)


def test_read_key_reads_but_cannot_write(cluster):
    with cluster.client(READ_KEY) as c:
        hits = c.search("docs", cluster.vectors[3], limit=3, with_payload=True)
        assert hits.ids[0] == 3 and hits.payloads[0] == {"i": 3}
        assert c.count("docs") == 50
        assert len(c.get("docs", [1, 2])) == 2
        assert c.get_collection("docs").points == 50
        assert "docs" in c.list_collections()
        with pytest.raises(PermissionDenied, match="Upsert needs an admin API key"):
            c.upsert("docs", [99], cluster.vectors[:1])
        for call in (lambda: c.delete("docs", [1]), lambda: c.delete_collection("docs"),
                     lambda: c.create_collection("other", 8)):
            with pytest.raises(PermissionDenied):
                call()
        assert c.count("docs") == 50


def test_admin_key_does_everything(cluster):
    with cluster.client(ADMIN_KEY) as c:
        c.create_collection("scratch", 8, "dot", shard_number=2)
        assert c.upsert("scratch", [1, 2, 3], cluster.vectors[:3]) == 3
        c.upsert_many("scratch", np.arange(10, 30, dtype=np.uint64), cluster.vectors[10:30], batch_size=8)
        assert c.count("scratch") == 23
        c.delete("scratch", np.arange(10, 30, dtype=np.uint64))
        assert c.search("scratch", cluster.vectors[0], limit=3).ids.size == 3
        assert c.delete("scratch", [1]) == 1
        assert c.count("scratch") == 2
        c.delete_collection("scratch")
        assert "scratch" not in c.list_collections()


def test_x_api_key_header_works_too(cluster):
    creds = grpc.ssl_channel_credentials(cluster.cert.read_bytes(), private_key=cluster.app_key.read_bytes(),
                                         certificate_chain=cluster.app_cert.read_bytes())
    with grpc.secure_channel(cluster.address, creds) as ch:
        from quiver.v1 import quiver_pb2 as pb
        from quiver.v1 import quiver_pb2_grpc as pb_grpc

        stub = pb_grpc.QuiverStub(ch)
        r = stub.Count(pb.CountRequest(collection="docs"), metadata=[("x-api-key", READ_KEY)], timeout=10)
        assert r.count == 50


def test_plaintext_client_to_the_tls_port_fails(cluster):
    with Client(cluster.address, timeout=3, api_key=ADMIN_KEY) as c:
        with pytest.raises(Exception) as e:  # noqa: PT011 - UNAVAILABLE or DEADLINE_EXCEEDED, by timing
            c.list_collections()
        assert type(e.value).__name__ in ("Unavailable", "DeadlineExceeded")


def test_coordinator_serves_only_clients_with_a_certificate(cluster, tmp_path):
    """The coordinator started with --tls-client-ca: a client that trusts its CA and holds
    an admin key gets no connection without a certificate that CA issued, or with one
    from another CA; `quiver admin` shows its certificate with --tls-cert/--tls-key."""
    from click.testing import CliRunner

    from quiver.admin_cli import admin

    other_cert, other_key = self_signed(tmp_path, "DNS:quiver-app")
    for kw in ({}, {"tls_cert": other_cert, "tls_key": other_key}):
        with Client(cluster.address, timeout=5, api_key=ADMIN_KEY, tls=True, ca_cert=cluster.cert, **kw) as c:
            with pytest.raises(Exception) as e:  # noqa: PT011
                c.list_collections()
            assert type(e.value).__name__ in ("Unavailable", "DeadlineExceeded")
    base = ["--address", cluster.address, "--tls-ca", str(cluster.cert), "--api-key", ADMIN_KEY, "--timeout", "10"]
    r = CliRunner().invoke(admin, ["status", *base, "--json"])
    assert r.exit_code == 4, r.output  # unreachable: no handshake without a certificate
    r = CliRunner().invoke(admin, ["status", *base, "--json", "--tls-cert", str(cluster.app_cert)])
    assert r.exit_code == 2 and "go together" in r.output
    r = CliRunner().invoke(admin, ["status", *base, "--json", "--tls-cert", str(cluster.app_cert),
                                   "--tls-key", str(cluster.app_key)])
    assert r.exit_code == 0, r.output


def test_tls_client_without_the_ca_fails(cluster):
    with Client(cluster.address, timeout=3, api_key=ADMIN_KEY, tls=True) as c:  # system roots only
        with pytest.raises(Exception) as e:  # noqa: PT011
            c.list_collections()
        assert type(e.value).__name__ in ("Unavailable", "DeadlineExceeded")


def test_shard_nodes_serve_only_tls(cluster):
    """The coordinator reaches the nodes over TLS (every search and write in this module
    passed through it); a plaintext caller, or one that does not trust the nodes'
    CA, gets nothing, secret or not."""
    assert_node_refuses(cluster, None)
    assert_node_refuses(cluster, grpc.ssl_channel_credentials())  # system roots only
    with cluster.client(READ_KEY) as c:
        hits = c.search("docs", cluster.vectors[3], limit=1)
        assert int(hits.ids[0]) == 3 and hits.shards_answered == 2  # both nodes, over TLS


def assert_node_refuses(cluster, credentials) -> None:
    """A call to a node with the cluster secret over ``credentials`` (None: plaintext)
    gets no answer: the connection never comes up."""
    address = cluster.nodes[0]
    with (grpc.insecure_channel(address) if credentials is None else
          grpc.secure_channel(address, credentials)) as ch:
        with pytest.raises(grpc.RpcError) as e:
            spb_grpc.ShardNodeStub(ch).ListShards(spb.ListShardsRequest(),
                                                  metadata=[("x-quiver-cluster-secret", SECRET)], timeout=5)
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_shard_nodes_serve_only_callers_with_a_client_certificate(cluster, tmp_path):
    """Mutual TLS: a caller that trusts the nodes' CA and holds the cluster secret still
    gets nothing without a certificate the nodes' --tls-client-ca signed, or with one
    another CA signed; with the coordinator's certificate the same call is answered."""
    roots = cluster.cert.read_bytes()
    assert_node_refuses(cluster, grpc.ssl_channel_credentials(roots))
    other_cert, other_key = self_signed(tmp_path, "DNS:quiver-coordinator")
    assert_node_refuses(cluster, grpc.ssl_channel_credentials(roots, private_key=other_key.read_bytes(),
                                                             certificate_chain=other_cert.read_bytes()))
    with grpc.secure_channel(cluster.nodes[0], cluster.node_credentials()) as ch:
        r = spb_grpc.ShardNodeStub(ch).ListShards(spb.ListShardsRequest(),
                                                  metadata=[("x-quiver-cluster-secret", SECRET)], timeout=10)
        assert {s.shard.collection for s in r.shards} == {"docs"}


def test_shard_node_refuses_callers_without_the_cluster_secret(cluster):
    with grpc.secure_channel(cluster.nodes[0], cluster.node_credentials()) as ch:
        stub = spb_grpc.ShardNodeStub(ch)
        for md in (None, [("x-quiver-cluster-secret", WRONG_SECRET)], [("authorization", f"Bearer {SECRET}")]):
            with pytest.raises(grpc.RpcError) as e:
                stub.ListShards(spb.ListShardsRequest(), metadata=md, timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert SECRET not in e.value.details()
        r = stub.ListShards(spb.ListShardsRequest(), metadata=[("x-quiver-cluster-secret", SECRET)], timeout=10)
        assert {s.shard.collection for s in r.shards} == {"docs"}


def test_keys_and_secrets_never_reach_the_logs(cluster):
    test_no_key_or_a_wrong_key_is_unauthenticated(cluster)  # make sure a wrong key was presented
    texts = [p.read_text() for p in cluster.logs]
    for text in texts:
        for secret in (WRONG_KEY, ADMIN_KEY, READ_KEY, SECRET, WRONG_SECRET):
            assert secret not in text
    coord = [json.loads(line) for line in texts[-1].splitlines() if line.startswith("{")]
    rejected = [r for r in coord if r["msg"] == "rpc rejected"]
    assert {r["code"] for r in rejected} >= {"UNAUTHENTICATED", "PERMISSION_DENIED"}
    listening = next(r for r in coord if r["msg"] == "coordinator listening")
    assert listening["tls"] is True and listening["api_keys"] == 2 and listening["cluster_secret"] is True


# ------------------------------------------------------------------ units


def test_every_key_is_compared_with_compare_digest():
    keys = security.ApiKeys([("a" * 16, "admin"), ("b" * 16, "read"), ("c" * 16, "read")])
    with mock.patch("quiver.security.hmac.compare_digest", wraps=hmac.compare_digest) as cd:
        assert keys.role_of("a" * 16) == "admin"  # the first key matches; the others are compared anyway
        assert cd.call_count == 3
        assert keys.role_of("c" * 16) == "read"
        assert keys.role_of("d" * 16) is None
        assert cd.call_count == 9
    assert keys.role_of(None) is None and keys.role_of("") is None
    assert "a" * 16 not in repr(keys)


def test_key_file_formats_and_errors(tmp_path):
    text = tmp_path / "k.txt"
    text.write_text(f"# comment\n{ADMIN_KEY} admin\n{READ_KEY}   read\n")
    js = tmp_path / "k.json"
    js.write_text(json.dumps({"keys": [{"key": ADMIN_KEY, "role": "admin"}, {"key": READ_KEY, "role": "read"}]}))
    for path in (text, js):
        keys = security.load_api_keys(path)
        assert len(keys) == 2 and keys.role_of(ADMIN_KEY) == "admin" and keys.role_of(READ_KEY) == "read"
    env = security.load_api_keys(admin=f"{ADMIN_KEY}, {ADMIN_KEY}x", read=READ_KEY)
    assert env.role_of(ADMIN_KEY + "x") == "admin" and env.role_of(READ_KEY) == "read"
    assert security.load_api_keys() is None
    bad = {"short admin\n": "at least 16", f"{WRONG_KEY} root\n": "role must be", f"{WRONG_KEY}\n": "line 1",
           f"{WRONG_KEY} admin\n{WRONG_KEY} read\n": "both admin and read",
           '{"keys": [{"key": "%s"}]}' % WRONG_KEY: "entry #1", '{"keys": [' + WRONG_KEY: "not valid JSON"}
    for content, message in bad.items():
        text.write_text(content)
        with pytest.raises(security.SecurityConfigError, match=message) as e:
            security.load_api_keys(text)
        assert WRONG_KEY not in str(e.value)
    assert security.load_cluster_secret(value=SECRET) == SECRET
    assert security.load_cluster_secret() is None
    with pytest.raises(security.SecurityConfigError, match="at least 16"):
        security.load_cluster_secret(value="short")


def test_roles_and_open_services():
    auth = security.Authorizer.for_api_keys(security.ApiKeys([(ADMIN_KEY, "admin"), (READ_KEY, "read")]))
    bearer = lambda k: [("authorization", f"Bearer {k}")]  # noqa: E731
    assert auth.decide("/grpc.health.v1.Health/Check", None) is None
    assert auth.decide("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", None) is None
    for m in ("Search", "GetPoints", "Count", "GetCollection", "ListCollections"):
        assert auth.decide(f"/quiver.v1.Quiver/{m}", bearer(READ_KEY)) is None
    for m in ("CreateCollection", "DeleteCollection", "Upsert", "DeletePoints"):
        assert auth.decide(f"/quiver.v1.Quiver/{m}", bearer(READ_KEY))[0] == grpc.StatusCode.PERMISSION_DENIED
        assert auth.decide(f"/quiver.v1.Quiver/{m}", bearer(ADMIN_KEY)) is None
        assert auth.decide(f"/quiver.v1.Quiver/{m}", None)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert auth.decide("/quiver.v1.Quiver/Search", [("authorization", f"Basic {READ_KEY}")])[0] == \
        grpc.StatusCode.UNAUTHENTICATED


def test_no_auth_is_logged_once(caplog):
    security._logged_open.discard("test-role")
    with caplog.at_level(logging.INFO, logger="quiver.security"):
        security.log_open_once("test-role", "127.0.0.1:0", "API keys")
        security.log_open_once("test-role", "127.0.0.1:0", "API keys")
    msgs = [r for r in caplog.records if "test-role" in r.getMessage()]
    assert len(msgs) == 1 and msgs[0].levelno == logging.INFO and "loopback" in msgs[0].getMessage()
    assert security.is_loopback("localhost:6334") and security.is_loopback("[::1]:1")
    assert not security.is_loopback("0.0.0.0:6334")


def test_cli_refuses_a_bad_key_file_without_echoing_it(tmp_path):
    from click.testing import CliRunner

    from quiver.cli import main

    keys = tmp_path / "keys"
    keys.write_text(f"{WRONG_KEY} superuser\n")
    r = CliRunner().invoke(main, ["coordinator", "--data-dir", str(tmp_path / "d"), "--shard-nodes", "x:1",
                                  "--api-keys-file", str(keys)])
    assert r.exit_code == 2 and "role must be" in r.output and WRONG_KEY not in r.output
    r = CliRunner().invoke(main, ["coordinator", "--data-dir", str(tmp_path / "d"), "--shard-nodes", "x:1",
                                  "--tls-cert", str(keys)])
    assert r.exit_code == 2 and "go together" in r.output
    r = CliRunner().invoke(main, ["shard-node", "--data-dir", str(tmp_path / "n"), "--tls-key", str(keys)])
    assert r.exit_code == 2 and "go together" in r.output
    r = CliRunner().invoke(main, ["coordinator", "--data-dir", str(tmp_path / "d"), "--shard-nodes", "x:1",
                                  "--shard-tls-ca", str(keys)])
    assert r.exit_code == 2 and "no PEM certificate" in r.output and WRONG_KEY not in r.output
    r = CliRunner().invoke(main, ["coordinator", "--data-dir", str(tmp_path / "d"), "--shard-nodes", "x:1",
                                  "--shard-tls-ca", str(tmp_path / "missing.pem")])
    assert r.exit_code == 2 and "cannot read TLS CA certificate" in r.output
    r = CliRunner().invoke(main, ["coordinator", "--data-dir", str(tmp_path / "d"), "--shard-nodes", "x:1",
                                  "--shard-tls-server-name", "nodes.quiver"])
    assert r.exit_code == 2 and "needs --shard-tls-ca" in r.output
    # mutual TLS: the node's client CA needs its own TLS; the coordinator's certificate
    # comes with its key and with the nodes' CA; files that hold no PEM are named
    r = CliRunner().invoke(main, ["shard-node", "--data-dir", str(tmp_path / "n"), "--tls-client-ca", str(keys)])
    assert r.exit_code == 2 and "--tls-client-ca needs --tls-cert" in r.output
    r = CliRunner().invoke(main, ["shard-node", "--data-dir", str(tmp_path / "n"), "--tls-cert", str(keys),
                                  "--tls-key", str(keys)])
    assert r.exit_code == 2 and "holds no PEM certificate" in r.output and WRONG_KEY not in r.output
    r = CliRunner().invoke(main, ["coordinator", "--data-dir", str(tmp_path / "d"), "--shard-nodes", "x:1",
                                  "--shard-tls-cert", str(keys)])
    assert r.exit_code == 2 and "--shard-tls-cert and --shard-tls-key go together" in r.output
    r = CliRunner().invoke(main, ["coordinator", "--data-dir", str(tmp_path / "d"), "--shard-nodes", "x:1",
                                  "--shard-tls-cert", str(keys), "--shard-tls-key", str(keys)])
    assert r.exit_code == 2 and "--shard-tls-cert needs --shard-tls-ca" in r.output
    # TLS to etcd: the same pairing rules
    etcd = ["coordinator", "--data-dir", str(tmp_path / "d"), "--etcd-endpoints", "127.0.0.1:1"]
    r = CliRunner().invoke(main, [*etcd, "--etcd-tls-key", str(keys)])
    assert r.exit_code == 2 and "--etcd-tls-cert and --etcd-tls-key go together" in r.output
    r = CliRunner().invoke(main, [*etcd, "--etcd-tls-cert", str(keys), "--etcd-tls-key", str(keys)])
    assert r.exit_code == 2 and "--etcd-tls-cert needs --etcd-tls-ca" in r.output
    r = CliRunner().invoke(main, [*etcd, "--etcd-tls-ca", str(keys)])
    assert r.exit_code == 2 and "no PEM certificate" in r.output and WRONG_KEY not in r.output
