"""Shared fixtures for the cluster tests: real shard-node processes, an in-process coordinator.

Shard nodes run as separate processes (``python -m quiver.cli shard-node`` on
port 0, the bound port read from a port file) and are shared by every test of
a module; the coordinator runs in the test process so tests can restart it.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class NodeProc:
    address: str
    metrics_port: int
    proc: object
    data_dir: Path


def start_shard_nodes(root: Path, n: int) -> list[NodeProc]:
    from quiver.local import spawn, wait_port_file

    started = []
    for i in range(n):
        data, pf, log = root / f"node-{i}", root / f"node-{i}.port", root / f"node-{i}.log"
        p = spawn("shard-node", ["--listen", "127.0.0.1:0", "--data-dir", str(data), "--metrics-port", "0",
                                 "--grace", "5"], pf, log)
        started.append((p, pf, log, data))
    nodes = []
    for p, pf, log, data in started:
        info = wait_port_file(pf, p, timeout=120, log_file=log)
        nodes.append(NodeProc(f"127.0.0.1:{info['port']}", info["metrics_port"], p, data))
    return nodes


def stop_shard_nodes(nodes: list[NodeProc]) -> None:
    from quiver.local import terminate

    terminate([n.proc.pid for n in nodes], timeout=10)
    for n in nodes:
        n.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def shard_nodes(tmp_path_factory):
    """Two shard-node processes for the module; yields their NodeProc records."""
    root = tmp_path_factory.mktemp("nodes")
    nodes = start_shard_nodes(root, 2)
    yield nodes
    stop_shard_nodes(nodes)
    shutil.rmtree(root, ignore_errors=True)


class LoopThread:
    """An asyncio event loop on a background thread, for in-process aio servers."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class CoordinatorHandle:
    """An in-process coordinator server that a test can restart on the same data dir."""

    def __init__(self, data_dir: Path, nodes: list[str], server_kw: dict | None = None, metadata_factory=None,
                 **kw):
        """``metadata_factory``: makes the coordinator's MetaBackend (e.g. an EtcdBackend) inside the
        serving loop at each start; default, the coordinator's own LMDB under ``data_dir``."""
        self.data_dir, self.nodes, self.kw, self.server_kw = data_dir, nodes, kw, server_kw or {}
        self.metadata_factory = metadata_factory
        self.loop = LoopThread()
        self.start()

    def start(self, port: int = 0) -> None:
        from coordinator.server import create_server
        from coordinator.service import Coordinator
        from quiver.serving import AioStreams, RpcMetrics

        async def up():
            kw = dict(self.kw)
            if self.metadata_factory is not None:
                kw["metadata"] = self.metadata_factory()
            self.coordinator = Coordinator(str(self.data_dir), self.nodes, **kw)
            self.metrics = RpcMetrics("coordinator")
            self.streams = AioStreams()
            self.server, self.port = await create_server(f"127.0.0.1:{port}", self.coordinator,
                                                         metrics=self.metrics, streams=self.streams,
                                                         **self.server_kw)

        self.loop.run(up())
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        from quiver.serving import stop_server

        async def down():
            await stop_server(self.server, 2, self.streams)
            await self.coordinator.close()

        self.loop.run(down())

    def restart(self) -> None:
        """Stop and start again on the same port and data dir (clients keep their channel)."""
        self.stop()
        self.start(self.port)

    def close(self) -> None:
        self.stop()
        self.loop.close()


@pytest.fixture(scope="session")
def cluster_helpers():
    """(CoordinatorHandle, start_shard_nodes, stop_shard_nodes) for tests that build their own cluster."""
    return CoordinatorHandle, start_shard_nodes, stop_shard_nodes


@pytest.fixture(scope="module")
def coordinator(shard_nodes, tmp_path_factory):
    # a generous shard deadline: on a fresh clone the first search in each shard
    # node compiles the numba kernels (cache=True makes that once per machine)
    handle = CoordinatorHandle(tmp_path_factory.mktemp("coordinator"), [n.address for n in shard_nodes],
                               shard_timeout=60.0)
    yield handle
    handle.close()


@pytest.fixture(scope="module")
def channel(coordinator):
    """A raw channel to the module's coordinator, for requests the typed client would refuse."""
    import grpc

    ch = grpc.insecure_channel(coordinator.address)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(channel):
    from quiver.v1 import quiver_pb2_grpc

    return quiver_pb2_grpc.QuiverStub(channel)


@pytest.fixture(scope="module")
def client(coordinator):
    from quiver.client import Client

    c = Client(coordinator.address, timeout=120)
    yield c
    c.close()


@pytest.fixture(scope="session", autouse=True)
def warm_numba_cache(tmp_path_factory):
    """Compile every engine kernel once, up front, into numba's on-disk cache.

    Shard-node processes started by the tests then load the kernels instead of
    compiling them inside a search call's deadline (on a fresh clone the first
    compile takes seconds per kernel).
    """
    import numpy as np

    from shard.config import CollectionConfig, IndexConfig, QuantizationConfig
    from shard.engine import ShardEngine

    root = tmp_path_factory.mktemp("warm")
    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    for i, kind in enumerate(("binary", "scalar", "product", "none")):
        eng = ShardEngine.create(str(root / str(i)), CollectionConfig(
            dim=16, quantization=QuantizationConfig(kind=kind, compression="x8"),
            index=IndexConfig(full_scan_threshold=100)))
        eng.upsert(np.arange(300), x, [{"i": 1}] * 300)
        eng.search_batch(x[:2], 5, 2.0, with_payload=True, with_vector=True)
        eng.search(x[0], 5, 2.0, rescore=False)
        eng.search(x[0], 5, ignore=True)
        eng.search(x[0], 5, exact=True)
        eng.delete([1])
        eng.close()


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory):
    """A real single-member etcd on 127.0.0.1 (free ports, data under tmp) for the session.

    Yields a ``tests/etcd_util.EtcdHandle`` (``.endpoint`` is "127.0.0.1:PORT");
    skips when there is no ``etcd`` binary (``./run test`` installs it through
    ``scripts/ensure-etcd``). Give each test its own key prefix.
    """
    from etcd_util import EtcdUnavailable, start_etcd

    try:
        handle = start_etcd(tmp_path_factory.mktemp("etcd"))
    except EtcdUnavailable as exc:
        pytest.skip(str(exc))
    yield handle
    handle.stop()
