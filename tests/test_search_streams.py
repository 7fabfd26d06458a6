"""Searches over long-lived streams: client -> coordinator (Quiver.SearchStream) and
coordinator -> shard node (ShardNode.SearchStream).

Both carry the same searches as the unary Search calls: the answers must be the
same, errors must come back per search with the same status while the stream
goes on, many threads must share one stream, a restarted or stopping server
must not leave a search hanging, and a server without the stream must still
be searchable (the callers fall back to unary calls).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import grpc
import numpy as np
import pytest

from quiver import convert
from quiver.client import Client
from quiver.v1 import quiver_pb2 as pb
from quiver.v1 import quiver_pb2_grpc
from quiver.v1 import shard_node_pb2 as spb
from quiver.v1 import shard_node_pb2_grpc as spb_grpc
from shard.config import CollectionConfig, QuantizationConfig
from shard.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from shard.node import ShardNode, ShardSearch

DIM = 16
N = 3000


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    return rng.standard_normal((N, DIM)).astype(np.float32), rng.standard_normal((40, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def coll(client, data):
    client.create_collection("streamed", DIM, "cosine", quantization="binary", shard_number=2)
    client.upsert_many("streamed", np.arange(N, dtype=np.uint64), data[0], batch_size=1000)
    return "streamed"


@pytest.fixture(scope="module")
def unary(coordinator):
    with Client(coordinator.address, timeout=60, search_stream=False) as c:
        yield c


def _same(a, b) -> None:
    assert a.ids.tolist() == b.ids.tolist()
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


def test_stream_answers_equal_unary_answers(client, unary, coll, data):
    q = data[1]
    for kw in (dict(oversampling=3.0), dict(oversampling=1.0, rescore=False), dict(exact=True),
               dict(offset=3, with_payload=True)):
        streamed = client.search_batch(coll, q, limit=7, **kw)
        plain = unary.search_batch(coll, q, limit=7, **kw)
        assert len(streamed) == len(plain) == len(q)
        for a, b in zip(streamed, plain):
            _same(a, b)
            assert a.shards_answered == b.shards_answered == 2


def test_a_failed_search_answers_with_its_status_and_the_stream_goes_on(client, coll, data):
    q = data[1][0]
    with pytest.raises(NotFound, match="no-such"):
        client.search("no-such", q)
    with pytest.raises(InvalidArgument, match="dimension"):
        client.search(coll, np.ones(DIM + 1, np.float32))
    with pytest.raises(InvalidArgument, match="NaN or Inf"):
        client.search(coll, np.full(DIM, np.nan, np.float32))
    assert len(client.search(coll, q, limit=5).ids) == 5  # the same stream still answers


def test_undecodable_message_gets_invalid_argument(coordinator):
    """Bytes that are not a SearchStreamRequest are answered, not a broken stream."""
    ch = grpc.insecure_channel(coordinator.address)
    try:
        call = ch.stream_stream("/quiver.v1.Quiver/SearchStream", request_serializer=lambda b: b,
                                response_deserializer=pb.SearchStreamResponse.FromString)
        answers = list(call(iter([b"\xff\xff\xff"]), timeout=30))
        assert len(answers) == 1
        assert answers[0].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "could not be parsed" in answers[0].status.message
    finally:
        ch.close()


def test_many_threads_share_one_stream(coordinator, unary, coll, data):
    q = data[1]
    expected = [unary.search(coll, v, limit=10, oversampling=2.0) for v in q]
    errors: list[BaseException] = []
    with Client(coordinator.address, timeout=60) as shared:
        def worker(k: int) -> None:
            try:
                for i in range(k, k + 60):
                    _same(shared.search(coll, q[i % len(q)], limit=10, oversampling=2.0), expected[i % len(q)])
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:3]


def test_search_deadline_holds_on_the_stream(client, coll, data):
    with pytest.raises(DeadlineExceeded):
        client.search(coll, data[1][0], timeout=1e-6)
    assert len(client.search(coll, data[1][0]).ids) == 10


def test_searches_work_again_after_a_coordinator_restart(coordinator, coll, data):
    with Client(coordinator.address, timeout=60) as c:
        c.search(coll, data[1][0])
        coordinator.restart()
        failures = 0
        for i in range(5):  # the stream the restart ended fails at most one search
            try:
                assert len(c.search(coll, data[1][i]).ids) == 10
            except Unavailable:
                failures += 1
        assert failures <= 1


def test_client_falls_back_to_unary_for_a_coordinator_without_the_stream(coordinator, unary, coll, data):
    """A coordinator from before SearchStream answers UNIMPLEMENTED; the client then searches
    with unary calls. The old coordinator here is the real servicer with the method taken out."""
    from coordinator.server import QuiverServicer
    from quiver.serving import RpcMetrics, new_server

    class OldServicer(QuiverServicer):
        SearchStream = quiver_pb2_grpc.QuiverServicer.SearchStream

    async def up():
        server = new_server(64 << 20)
        quiver_pb2_grpc.add_QuiverServicer_to_server(OldServicer(coordinator.coordinator, RpcMetrics("c")), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = coordinator.loop.run(up())
    try:
        with Client(f"127.0.0.1:{port}", timeout=60) as c:
            for v in data[1][:5]:
                _same(c.search(coll, v, limit=10), unary.search(coll, v, limit=10))
            assert c._search_stream.unsupported
    finally:
        coordinator.loop.run(server.stop(0))


def test_stopping_coordinator_ends_client_streams_without_waiting_out_the_grace(coordinator, coll, data):
    """A client's idle search stream must not hold a coordinator's stop for its grace (30 s here):
    the stream ends after its last answer and the client's next search fails as UNAVAILABLE."""
    from coordinator.server import QuiverServicer
    from quiver.serving import AioStreams, RpcMetrics, new_server, stop_server

    async def up():
        streams = AioStreams()
        server = new_server(64 << 20)
        quiver_pb2_grpc.add_QuiverServicer_to_server(
            QuiverServicer(coordinator.coordinator, RpcMetrics("c"), streams), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port, streams

    server, port, streams = coordinator.loop.run(up())
    with Client(f"127.0.0.1:{port}", timeout=30) as c:
        assert len(c.search(coll, data[1][0]).ids) == 10  # the stream is open and idle now
        t = time.monotonic()
        coordinator.loop.run(stop_server(server, 30, streams))
        assert time.monotonic() - t < 5, "the coordinator waited out its grace for an idle stream"
        with pytest.raises(Unavailable):
            c.search(coll, data[1][1])


# ------------------------------------------------------------- shard-node streams

@pytest.fixture()
def node_server(tmp_path):
    from quiver.serving import RpcMetrics
    from shard.server import create_server

    node = ShardNode(tmp_path / "node")
    node.create("c", 0, CollectionConfig(dim=8, quantization=QuantizationConfig("scalar")))
    x = np.random.default_rng(3).standard_normal((400, 8)).astype(np.float32)
    node.get("c", 0).upsert_now(np.arange(400, dtype=np.uint64), x, None)
    metrics = RpcMetrics("shard")
    server, port = create_server("127.0.0.1:0", node, metrics=metrics)
    yield f"127.0.0.1:{port}", x, metrics
    server.stop(0)
    node.close()


def _request(shard: int, q: np.ndarray, limit: int = 5) -> spb.ShardSearchRequest:
    return convert.shard_search_to_proto(spb.ShardRef(collection="c", shard_id=shard), q,
                                         ShardSearch(limit=limit, oversampling=2.0))


def test_node_stream_answers_in_order_with_per_search_status(node_server):
    address, x, metrics = node_server
    with grpc.insecure_channel(address) as ch:
        stub = spb_grpc.ShardNodeStub(ch)
        reqs = [spb.ShardSearchStreamRequest(tag=10 + i, search=_request(0 if i != 2 else 9, x[i:i + 2]))
                for i in range(5)]
        answers = list(stub.SearchStream(iter(reqs), timeout=30))
        assert [a.tag for a in answers] == [10, 11, 12, 13, 14]
        assert answers[2].status.code == grpc.StatusCode.NOT_FOUND.value[0]
        for i in (0, 1, 3, 4):
            assert answers[i].status.code == 0
            want = stub.Search(reqs[i].search, timeout=30)
            for a, b in zip(answers[i].result.results, want.results):
                assert a.ids == b.ids and a.scores == b.scores
    assert metrics.requests.labels("shard", "Search", "NOT_FOUND")._value.get() == 1


def test_coordinator_falls_back_to_unary_for_a_node_without_the_stream(tmp_path):
    asyncio.run(_old_node(tmp_path))


async def _old_node(tmp_path):
    from coordinator.shard_client import NodePool
    from quiver.serving import RpcMetrics, new_thread_server
    from shard.server import ShardNodeServicer

    class OldServicer(ShardNodeServicer):
        SearchStream = spb_grpc.ShardNodeServicer.SearchStream

    node = ShardNode(tmp_path / "node")
    node.create("c", 0, CollectionConfig(dim=8, quantization=QuantizationConfig("scalar")))
    x = np.random.default_rng(3).standard_normal((400, 8)).astype(np.float32)
    node.get("c", 0).upsert_now(np.arange(400, dtype=np.uint64), x, None)
    server = new_thread_server(64 << 20, 4)
    spb_grpc.add_ShardNodeServicer_to_server(OldServicer(node, RpcMetrics("shard")), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    pool = NodePool(64 << 20, 30.0)
    try:
        shard = pool.shard(f"127.0.0.1:{port}", "c", 0)
        for i in range(3):
            hits = await shard.search(x[i:i + 1], ShardSearch(limit=5))
            assert hits[0].ids[0] == i
        assert shard.searcher.unsupported
    finally:
        await pool.close()
        server.stop(0)
        node.close()


def test_stalled_node_fails_a_streamed_search_by_its_deadline(tmp_path, cluster_helpers):
    """A node that stops answering (SIGSTOP) fails the stream's search with DEADLINE_EXCEEDED
    at the deadline, as a unary call would; once it runs again the stream answers again."""
    _, start_shard_nodes, stop_shard_nodes = cluster_helpers
    nodes = start_shard_nodes(tmp_path, 1)

    async def run():
        from coordinator.shard_client import NodePool

        pool = NodePool(64 << 20, 30.0)
        try:
            cfg = CollectionConfig(dim=8, quantization=QuantizationConfig("scalar"))
            await pool.node(nodes[0].address).create_shard("c", 0, convert.config_to_json(cfg), False)
            shard = pool.shard(nodes[0].address, "c", 0)
            x = np.random.default_rng(5).standard_normal((200, 8)).astype(np.float32)
            await shard.upsert(np.arange(200, dtype=np.uint64), x, None)
            assert (await shard.search(x[:1], ShardSearch(limit=3)))[0].ids[0] == 0
            os.kill(nodes[0].proc.pid, signal.SIGSTOP)
            try:
                t = time.monotonic()
                with pytest.raises(DeadlineExceeded):
                    await shard.search(x[1:2], ShardSearch(limit=3), timeout=0.3)
                assert time.monotonic() - t < 2.0
            finally:
                os.kill(nodes[0].proc.pid, signal.SIGCONT)
            assert (await shard.search(x[2:3], ShardSearch(limit=3), timeout=30))[0].ids[0] == 2
        finally:
            await pool.close()

    try:
        asyncio.run(run())
    finally:
        stop_shard_nodes(nodes)


def test_stopping_servers_end_open_streams_without_waiting_out_the_grace(tmp_path, cluster_helpers):
    """SIGTERM on a shard node with a 30 s grace and a coordinator's stream open: the node
    exits in seconds (the stream ends after its last answer), and the coordinator's next
    search there fails as UNAVAILABLE instead of hanging."""
    from quiver.local import spawn, wait_port_file

    pf, log = tmp_path / "n.port", tmp_path / "n.log"
    p = spawn("shard-node", ["--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "n"), "--metrics-port", "0",
                             "--grace", "30"], pf, log)
    address = f"127.0.0.1:{wait_port_file(pf, p, timeout=120, log_file=log)['port']}"

    async def run():
        from coordinator.shard_client import NodePool

        pool = NodePool(64 << 20, 30.0)
        try:
            cfg = CollectionConfig(dim=8, quantization=QuantizationConfig("scalar"))
            await pool.node(address).create_shard("c", 0, convert.config_to_json(cfg), False)
            shard = pool.shard(address, "c", 0)
            await shard.upsert(np.arange(50, dtype=np.uint64), np.ones((50, 8), np.float32), None)
            await shard.search(np.ones((1, 8), np.float32), ShardSearch(limit=3))  # the stream is open
            t = time.monotonic()
            p.send_signal(signal.SIGTERM)
            await asyncio.get_running_loop().run_in_executor(None, p.wait, 20)
            assert time.monotonic() - t < 10, "the node waited out its grace for an idle stream"
            with pytest.raises(Unavailable):
                await shard.search(np.ones((1, 8), np.float32), ShardSearch(limit=3), timeout=10)
        finally:
            await pool.close()

    try:
        asyncio.run(run())
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
