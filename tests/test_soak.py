"""A bounded soak: a local cluster under mixed upserts, deletes and searches for a while.

Two shard-node processes and an in-process coordinator; collection ``soak_r2``
(2 shards, replication 2, scalar codes) and ``soak_r1`` (2 shards, replication 1,
binary codes). One writer thread per collection upserts and deletes random ids
of a fixed id space (so the data size levels off and memory can be judged), two
threads search both collections, for ``QUIVER_SOAK_SECONDS`` (default 120) and
bounded op counts. Afterwards: no errors, every acknowledged write present with
its payload and vector, every acknowledged delete absent, and each shard node's
RSS flat after warm-up (sampled from /proc every few seconds and printed).

Run:  NUMBA_CACHE_DIR=.numba-cache QUIVER_SOAK_SECONDS=120 .venv/bin/python -m pytest -m soak tests/test_soak.py -s
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from quiver.client import Client

SECONDS = float(os.environ.get("QUIVER_SOAK_SECONDS", "120"))
DIM = 32
ID_SPACE = 20_000  # per collection: upserts and deletes draw from it, so the size levels off
BATCH, DELETES = 200, 60
RSS_SLACK = 0.15  # last third's peak within 15 % of the middle third's ...
RSS_ABS_SLACK = 24 << 20  # ... plus 24 MiB (allocator and gRPC buffers jitter)

pytestmark = [pytest.mark.soak, pytest.mark.timeout(SECONDS + 300)]


def _vectors(ids: np.ndarray, version: int) -> np.ndarray:
    """A vector per (id, version), splitmix64-hashed (a rewrite gets a new vector, so stale data shows)."""
    z = ids.astype(np.uint64)[:, None] * np.uint64(DIM) + np.arange(DIM, dtype=np.uint64)[None, :]
    z = z + np.uint64((version * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % (1 << 64))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return ((z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24) - 0.5).astype(np.float32)


def _rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    return 0


class Model:
    """What one collection must hold: id -> version of its last acknowledged upsert (absent if deleted)."""

    def __init__(self):
        self.version: dict[int, int] = {}
        self.deleted: set[int] = set()


class WriterLoop(threading.Thread):
    def __init__(self, client, name: str, model: Model, seed: int, deadline: float, max_ops: int):
        super().__init__(daemon=True, name=f"writer-{name}")
        self.client, self.name, self.model = client, name, model
        self.rng = np.random.default_rng(seed)
        self.deadline, self.max_ops = deadline, max_ops
        self.ops = 0
        self.errors: list[str] = []

    def run(self) -> None:
        v = 0
        while self.ops < self.max_ops and time.monotonic() < self.deadline:
            v += 1
            ids = np.unique(self.rng.integers(0, ID_SPACE, BATCH)).astype(np.uint64)
            try:
                self.client.upsert(self.name, ids, _vectors(ids, v), payloads=[{"v": v}] * len(ids))
                for i in ids.tolist():
                    self.model.version[i] = v
                    self.model.deleted.discard(i)
                gone = np.unique(self.rng.integers(0, ID_SPACE, DELETES)).astype(np.uint64)
                self.client.delete(self.name, gone)
                for i in gone.tolist():
                    self.model.version.pop(i, None)
                    self.model.deleted.add(i)
            except Exception as e:  # noqa: BLE001 - counted: the soak wants none
                self.errors.append(repr(e))
                if len(self.errors) > 20:
                    return
            self.ops += 2


class SearchLoop(threading.Thread):
    def __init__(self, client, names: list[str], seed: int, deadline: float, max_ops: int):
        super().__init__(daemon=True, name=f"searcher-{seed}")
        self.client, self.names = client, names
        self.rng = np.random.default_rng(seed)
        self.deadline, self.max_ops = deadline, max_ops
        self.ops = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while self.ops < self.max_ops and time.monotonic() < self.deadline:
            name = self.names[self.ops % len(self.names)]
            q = self.rng.standard_normal(DIM).astype(np.float32)
            try:
                if self.ops % 10 == 9:
                    self.client.get(name, self.rng.integers(0, ID_SPACE, 20).astype(np.uint64), with_vector=True)
                else:
                    r = self.client.search(name, q, limit=10, with_payload=self.ops % 3 == 0, oversampling=2.0)
                    if r.shards_answered != r.shards_total or len(r) > 10:
                        self.errors.append(f"{name}: {r.shards_answered}/{r.shards_total} shards, {len(r)} hits")
            except Exception as e:  # noqa: BLE001 - counted: the soak wants none
                self.errors.append(repr(e))
                if len(self.errors) > 20:
                    return
            self.ops += 1


class RssSampler(threading.Thread):
    def __init__(self, pids: dict[str, int], every: float, stop: threading.Event):
        super().__init__(daemon=True, name="rss")
        self.pids, self.every, self.stop = pids, every, stop
        self.samples: list[tuple[float, dict[str, int]]] = []

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.is_set():
            self.samples.append((time.monotonic() - t0, {k: _rss(p) for k, p in self.pids.items()}))
            self.stop.wait(self.every)


def _check(client, name: str, model: Model) -> tuple[int, int]:
    """Every acknowledged write there with its payload and vector, every acknowledged delete gone."""
    want = np.array(sorted(model.version), np.uint64)
    assert client.count(name) == len(want)
    got = client.get(name, want, with_payload=True, with_vector=True)
    assert np.asarray(got.ids, np.uint64).tolist() == want.tolist()
    versions = [model.version[i] for i in want.tolist()]
    assert got.payloads == [{"v": v} for v in versions]
    by_version: dict[int, list[int]] = {}
    for row, v in enumerate(versions):
        by_version.setdefault(v, []).append(row)
    for v, rows in by_version.items():
        x = _vectors(want[rows], v)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        np.testing.assert_allclose(got.vectors[rows], x, rtol=1e-5, atol=1e-5)
    deleted = np.array(sorted(model.deleted), np.uint64)
    assert len(client.get(name, deleted)) == 0
    return len(want), len(deleted)


def test_soak_mixed_load_loses_nothing_and_memory_stays_flat(tmp_path, cluster_helpers):
    handle_cls, start, stop = cluster_helpers
    (tmp_path / "nodes").mkdir()
    nodes = start(tmp_path / "nodes", 2)
    handle = None
    clients = []
    try:
        handle = handle_cls(tmp_path / "coord", [n.address for n in nodes], shard_timeout=10.0)
        admin = Client(handle.address, timeout=60)
        clients.append(admin)
        admin.create_collection("soak_r2", DIM, "cosine", quantization="scalar", shard_number=2,
                                replication_factor=2)
        admin.create_collection("soak_r1", DIM, "cosine", quantization="binary", shard_number=2)
        models = {"soak_r2": Model(), "soak_r1": Model()}

        stop_rss = threading.Event()
        sampler = RssSampler({n.address: n.proc.pid for n in nodes}, max(1.0, SECONDS / 40), stop_rss)
        sampler.start()
        deadline = time.monotonic() + SECONDS
        threads = []
        for i, name in enumerate(models):
            c = Client(handle.address, timeout=60)
            clients.append(c)
            threads.append(WriterLoop(c, name, models[name], i, deadline, max_ops=int(100 * SECONDS)))
        for i in range(2):
            c = Client(handle.address, timeout=60)
            clients.append(c)
            threads.append(SearchLoop(c, list(models), 100 + i, deadline, max_ops=int(2000 * SECONDS)))
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(SECONDS + 120)
        elapsed = time.monotonic() - t0
        stop_rss.set()
        sampler.join(10)
        assert not any(t.is_alive() for t in threads), "a load thread did not finish"

        errors = [e for t in threads for e in t.errors]
        ops = {t.name: t.ops for t in threads}
        print(f"\nsoak: {elapsed:.0f} s, ops {ops} ({sum(ops.values()) / elapsed:.0f}/s), errors {len(errors)}")
        checked = {name: _check(admin, name, m) for name, m in models.items()}
        print(f"soak: present/deleted checked per collection {checked}")
        print("soak: RSS MiB per node, t(s): " + "; ".join(
            f"{t:.0f}: " + ", ".join(f"{v / 2**20:.0f}" for v in rss.values()) for t, rss in sampler.samples))
        assert not errors, errors[:5]

        n = len(sampler.samples)
        assert n >= 9, f"only {n} RSS samples"
        for node in sampler.pids:
            series = [rss[node] for _, rss in sampler.samples]
            middle, last = max(series[n // 3: 2 * n // 3]), max(series[2 * n // 3:])
            print(f"soak: {node}: middle third peak {middle / 2**20:.0f} MiB, last third peak "
                  f"{last / 2**20:.0f} MiB ({(last / middle - 1) * 100:+.1f} %)")
            assert last <= middle * (1 + RSS_SLACK) + RSS_ABS_SLACK, (node, middle, last)
    finally:
        for c in clients:
            c.close()
        if handle is not None:
            handle.close()
        stop(nodes)
