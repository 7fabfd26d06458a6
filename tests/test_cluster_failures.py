"""Failures over real channels: a shard node dies, a deadline passes, a message is too big."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from quiver.client import Client
from shard.errors import DeadlineExceeded, ResourceExhausted, Unavailable

DIM = 16


@pytest.fixture(scope="module")
def doomed_node(tmp_path_factory, cluster_helpers):
    """A third shard node that a test kills."""
    _, start, stop = cluster_helpers
    nodes = start(tmp_path_factory.mktemp("doomed"), 1)
    yield nodes[0]
    stop(nodes)


def _load(client, name, n=300, **kw):
    client.create_collection(name, DIM, "cosine", quantization="none", **kw)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    client.upsert(name, np.arange(n, dtype=np.uint64), x)
    return x


def test_unreachable_shard_is_unavailable_and_replicas_fail_over(shard_nodes, doomed_node, tmp_path,
                                                                 cluster_helpers):
    live, doomed = shard_nodes[0], doomed_node
    handle = cluster_helpers[0](tmp_path / "coord", [live.address, doomed.address], shard_timeout=5.0)
    try:
        with Client(handle.address, timeout=30) as c:
            x = _load(c, "fragile", shard_number=2)
            _load(c, "replicated", shard_number=2, replication_factor=2)
            before = c.search("replicated", x[0], limit=5, exact=True)
            os.kill(doomed.proc.pid, signal.SIGKILL)
            doomed.proc.wait(timeout=10)

            with pytest.raises(Unavailable) as exc:
                c.search("fragile", x[0], limit=5)
            msg = str(exc.value)
            assert "shard" in msg and doomed.address in msg and "'fragile'" in msg
            for call in (lambda: c.count("fragile"),
                         lambda: c.upsert("fragile", np.arange(50, dtype=np.uint64), x[:50])):
                with pytest.raises(Unavailable, match=doomed.address):
                    call()
            partial = c.search("fragile", x[0], limit=5, allow_partial=True)
            assert (partial.shards_answered, partial.shards_total) == (1, 2)
            assert len(partial) == 5
            assert c.get_collection("fragile").status == "red"

            # every shard of "replicated" has a replica on the live node
            after = c.search("replicated", x[0], limit=5, exact=True)
            assert after.ids.tolist() == before.ids.tolist() and after.shards_answered == 2
            assert c.count("replicated") == 300
            info = c.get_collection("replicated")
            assert info.status == "yellow" and info.points == 300
    finally:
        handle.close()


def test_shard_deadline_is_deadline_exceeded(shard_nodes, tmp_path, cluster_helpers):
    handle = cluster_helpers[0](tmp_path / "coord", [n.address for n in shard_nodes])
    try:
        with Client(handle.address, timeout=30) as c:
            x = _load(c, "slow", shard_number=2)
        handle.stop()
        handle.kw["shard_timeout"] = 1e-6  # no shard can answer within a microsecond
        handle.start()
        with Client(handle.address, timeout=30) as c:
            with pytest.raises(DeadlineExceeded) as exc:
                c.search("slow", x[0], limit=5)
            assert "shard" in str(exc.value) and "'slow'" in str(exc.value)
        handle.stop()
        handle.kw["shard_timeout"] = 10.0
        handle.start()
        with Client(handle.address, timeout=30) as c:
            c.delete_collection("slow")
    finally:
        handle.close()


def test_message_size_limits_give_clear_errors(shard_nodes, tmp_path, cluster_helpers):
    handle = cluster_helpers[0](tmp_path / "coord", [n.address for n in shard_nodes],
                               server_kw={"max_message_mb": 1})
    try:
        n = 2000  # 2000 x 256 x 4 bytes = 2 MB
        x = np.random.default_rng(0).standard_normal((n, 256)).astype(np.float32)
        ids = np.arange(n, dtype=np.uint64)
        with Client(handle.address, timeout=30) as big:  # client allows 64 MB, the server 1 MB
            big.create_collection("sized", 256, quantization="none")
            with pytest.raises(ResourceExhausted) as exc:
                big.upsert("sized", ids, x)
            assert "larger than max" in str(exc.value)
        with Client(handle.address, timeout=30, max_message_mb=1) as small:
            with pytest.raises(ResourceExhausted, match="upsert_many"):  # refused before sending
                small.upsert("sized", ids, x)
            assert small.upsert_many("sized", ids, x) == n  # batches sized to fit
            assert small.count("sized") == n
            small.delete_collection("sized")
    finally:
        handle.close()
