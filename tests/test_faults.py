"""Faults with real processes on this machine: a shard node SIGKILLed during ingest and during a
search, a network partition (``ip netns``), a stalled node (SIGSTOP) with and without hedged
reads, and a full disk under a shard node.

Two loopback shard-node processes serve the module (killed and restarted in
place on the same address and data dir); the partition and disk-full tests
start their own node. Every call is bounded by a deadline, every load loop in
count and time, and every process, namespace, veth pair and mount is removed in
teardown, also on failure.

``QUIVER_WRITE_RELIABILITY=1`` writes the faults section of ``tests/RELIABILITY.md``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import reliability_doc
from quiver.client import Client
from shard.errors import DeadlineExceeded, QuiverError, ResourceExhausted, Unavailable
from test_cluster_management import _check_exact, _hash_vectors, _replicas, _start_node, _unit, _wait

DIM = 16

#: fault -> (what was done, what the system did, data lost), filled in by the tests
_FAULTS: dict[str, tuple[str, str, str]] = {}
_ORDER = ["kill-ingest", "kill-search", "partition", "stall", "disk-full", "disk-full-retrain"]


class Nodes:
    """Loopback shard-node processes that tests kill, stop and restart in place."""

    def __init__(self, root, n: int):
        from conftest import start_shard_nodes

        self.root = root
        self.procs = start_shard_nodes(root, n)  # in parallel; node-<i> dirs, as _start_node names them

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.procs]

    def pid(self, i: int) -> int:
        return self.procs[i].proc.pid

    def kill(self, i: int) -> None:
        p = self.procs[i].proc
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)

    def restart(self, i: int) -> None:
        n = self.procs[i]
        if n.proc.poll() is None:
            self.kill(i)
        self.procs[i] = _start_node(self.root, i, n.address)

    def ensure_up(self) -> None:
        for i, n in enumerate(self.procs):
            try:
                os.kill(n.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            if n.proc.poll() is not None:
                self.restart(i)

    def stop(self) -> None:
        from conftest import stop_shard_nodes

        for n in self.procs:
            if n.proc.poll() is None:
                os.kill(n.proc.pid, signal.SIGCONT)
        stop_shard_nodes([n for n in self.procs if n.proc.poll() is None])


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    ns = Nodes(tmp_path_factory.mktemp("fault-nodes"), 2)
    yield ns
    ns.stop()


@pytest.fixture(scope="module", autouse=True)
def reliability_report():
    yield
    if reliability_doc.enabled() and all(k in _FAULTS for k in _ORDER):
        write_reliability()


@pytest.fixture
def coordinator(nodes, tmp_path, cluster_helpers):
    """Makes in-process coordinators over ``nodes`` (or given addresses); all closed at teardown."""
    handles = []

    def make(addresses=None, **kw):
        nodes.ensure_up()
        h = cluster_helpers[0](tmp_path / f"coord-{len(handles)}", addresses or nodes.addresses, **kw)
        handles.append(h)
        return h

    yield make
    for h in handles:
        try:
            h.close()
        except Exception:  # noqa: BLE001 - already stopped by the test
            h.loop.close()


def _timed(fn):
    """(value or the QuiverError raised, seconds)."""
    t0 = time.monotonic()
    try:
        v = fn()
    except QuiverError as e:
        v = e
    return v, time.monotonic() - t0


def _load(client, name: str, n: int, **kw) -> np.ndarray:
    client.create_collection(name, DIM, "cosine", **kw)
    ids = np.arange(n, dtype=np.uint64)
    # one batch: each shard trains its quantizer on all of its part (upsert_many's batches would
    # train on the first ~500 and retrain at 4x that, under the tests' feet)
    client.upsert(name, ids, _hash_vectors(ids), payloads=[{"i": int(i)} for i in ids.tolist()])
    return ids


QUERIES = _hash_vectors(np.arange(10**6, 10**6 + 10, dtype=np.uint64))


# ------------------------------------------------------------ 1. SIGKILL during ingest


class IngestWriter(threading.Thread):
    """Upserts fresh ids with payloads through the coordinator, bounded in attempts and time.

    Keeps going after a failed batch (a client would retry; this one moves on, so a
    failed batch's ids stay "unacknowledged"). ``acked``: ids of acknowledged batches;
    ``failed``: (ids, error) of the others.
    """

    def __init__(self, client, name: str, start_id: int, batch: int = 100, max_attempts: int = 60,
                 max_seconds: float = 30.0):
        super().__init__(daemon=True)
        self.client, self.name, self.next_id, self.batch = client, name, start_id, batch
        self.max_attempts, self.max_seconds = max_attempts, max_seconds
        self.acked: list[int] = []
        self.acked_batches = 0
        self.failed: list[tuple[np.ndarray, Exception]] = []
        self.attempts = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop_flag.is_set() and self.attempts < self.max_attempts \
                and time.monotonic() - t0 < self.max_seconds:
            ids = np.arange(self.next_id, self.next_id + self.batch, dtype=np.uint64)
            self.next_id += self.batch
            self.attempts += 1
            try:
                self.client.upsert(self.name, ids, _hash_vectors(ids),
                                   payloads=[{"i": int(i), "w": 1} for i in ids.tolist()])
            except Exception as e:  # noqa: BLE001 - the test inspects every failure
                self.failed.append((ids, e))
                time.sleep(0.25)
                continue
            self.acked.extend(ids.tolist())
            self.acked_batches += 1


def test_shard_node_killed_during_ingest_keeps_every_acknowledged_point(nodes, coordinator):
    handle = coordinator(shard_timeout=5.0, write_timeout=10.0)
    client = Client(handle.address, timeout=30)
    try:
        base = _load(client, "ingest", 4000, quantization="scalar", shard_number=2)
        # per shard the quantizer is trained on its ~2000 first points and retrains at 4x that:
        # the writer adds at most 6000 (3000 a shard), so the codes compared below are never rebuilt
        before = client.search_batch("ingest", QUERIES, limit=50, rescore=False)
        victim = 1

        w = IngestWriter(client, "ingest", 100_000)
        w.start()
        _wait(lambda: w.acked_batches >= 5 or w.failed, 20, "the writer to start")
        assert not w.failed, w.failed[0][1]
        acked_before_kill = len(w.acked)
        nodes.kill(victim)
        killed_at = time.monotonic()
        _wait(lambda: len(w.failed) >= 3 or not w.is_alive(), 20, "writes to fail")
        t0 = time.monotonic()
        nodes.restart(victim)  # same address and data dir
        restarted_in = time.monotonic() - t0
        n = w.acked_batches
        _wait(lambda: w.acked_batches >= n + 5 or not w.is_alive(), 30, "writes after the restart")
        first_ack_after = time.monotonic() - killed_at
        w.stop_flag.set()
        w.join(30)
        assert w.acked_batches >= n + 5, f"only {w.acked_batches - n} batches acknowledged after the restart"

        codes = {type(e).__name__ for _, e in w.failed}
        assert codes == {"Unavailable"}, [repr(e) for _, e in w.failed[:3]]
        assert all(nodes.addresses[victim] in str(e) for _, e in w.failed)

        # every acknowledged point, with its payload and vector
        acked = np.array(sorted(w.acked), np.uint64)
        got = client.get("ingest", acked, with_payload=True, with_vector=True)
        assert np.asarray(got.ids, np.uint64).tolist() == acked.tolist()
        assert got.payloads == [{"i": int(i), "w": 1} for i in acked.tolist()]
        np.testing.assert_allclose(_unit(got.vectors), _unit(_hash_vectors(acked)), rtol=1e-5, atol=1e-6)
        base_got = client.get("ingest", base, with_payload=True)
        assert len(base_got) == len(base) and base_got.payloads == [{"i": int(i)} for i in base.tolist()]

        # unacknowledged batches: the live shard's part was written, the dead one's was not
        unacked = np.concatenate([ids for ids, _ in w.failed])
        present = client.get("ingest", unacked, with_payload=True, with_vector=True)
        assert all(p == {"i": int(i), "w": 1} for i, p in zip(np.asarray(present.ids).tolist(), present.payloads))
        assert client.count("ingest") == len(base) + len(acked) + len(present)

        # the codes reloaded on the restarted node are the ones written with the originals:
        # the same points get the very same approximate scores as before the crash, and no
        # point that scored above a query's cut-off is missing from its list
        after = client.search_batch("ingest", QUERIES, limit=50, rescore=False)
        common = 0
        for b, a in zip(before, after):
            sa = dict(zip(np.asarray(a.ids).tolist(), a.scores.tolist()))
            cut = float(a.scores.min())
            for i, s in zip(np.asarray(b.ids).tolist(), b.scores.tolist()):
                if i in sa:
                    assert sa[i] == pytest.approx(s, rel=1e-6, abs=1e-6), (i, s, sa[i])
                    common += 1
                else:
                    assert s <= cut + 1e-6, f"point {i} (score {s}) is missing from the results"
        exact = client.search_batch("ingest", QUERIES, limit=10, exact=True)
        recall = np.mean([len(set(np.asarray(e.ids).tolist()) & set(np.asarray(a.ids)[:10].tolist())) / 10
                          for e, a in zip(exact, client.search_batch("ingest", QUERIES, limit=10, rescore=False))])
        assert recall >= 0.7, recall
        assert common >= 250
        _FAULTS["kill-ingest"] = (
            "Shard node SIGKILLed during ingest through the coordinator (replication 1, 2 shards; a writer "
            "thread upserting 100-point batches with payloads), restarted on the same address and data dir",
            f"Batches touching the dead shard failed fast with `UNAVAILABLE` naming the node "
            f"({len(w.failed)} of {w.attempts} batches, {acked_before_kill} points acknowledged before the kill). "
            f"The node was back in {restarted_in:.1f} s and five more batches were acknowledged within "
            f"{first_ack_after:.1f} s of the kill. Afterwards every acknowledged point was there with its "
            f"payload and vector; of the {len(unacked)} unacknowledged points {len(present)} were there (the "
            f"live shard's half of each failed batch, whole). Approximate (rescore=False) scores of "
            f"{common} query/point pairs were identical before and after the crash (codes reloaded from LMDB "
            f"match the originals); rescore=False recall@10 against exact {recall:.2f}.",
            "none acknowledged; a failed batch's points on the live shard stay written (no rollback across shards)",
        )
    finally:
        client.close()


# ------------------------------------------------------------ 2. SIGKILL during a search


def test_search_in_flight_when_its_node_dies_fails_fast(nodes, coordinator):
    shard_timeout = 20.0
    handle = coordinator(shard_timeout=shard_timeout)
    client = Client(handle.address, timeout=30)
    victim = 1
    try:
        _load(client, "inflight", 2000, quantization="none", shard_number=2)
        full = client.search("inflight", QUERIES[0], limit=10, exact=True)
        # hold the searches on the victim (SIGSTOP), then SIGKILL it: both are on the wire when it dies
        os.kill(nodes.pid(victim), signal.SIGSTOP)
        out: dict[str, tuple] = {}

        def ask(key, **kw):
            out[key] = _timed(lambda: client.search("inflight", QUERIES[0], limit=10, exact=True, **kw))

        threads = [threading.Thread(target=ask, args=("strict",), daemon=True),
                   threading.Thread(target=ask, args=("partial",), kwargs={"allow_partial": True}, daemon=True)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        assert not out, out  # both wait on the stopped node
        t0 = time.monotonic()
        nodes.kill(victim)
        for t in threads:
            t.join(30)
        since_kill = time.monotonic() - t0

        strict, t_strict = out["strict"]
        assert isinstance(strict, Unavailable), strict
        msg = str(strict)
        assert "shard" in msg and nodes.addresses[victim] in msg and "'inflight'" in msg
        partial, t_partial = out["partial"]
        assert not isinstance(partial, Exception), partial
        assert (partial.shards_answered, partial.shards_total) == (1, 2) and len(partial) == 10
        (missing,) = partial.missing_shards  # the response names the shard that did not answer
        assert "shard" in missing and nodes.addresses[victim] in missing and "'inflight'" in missing
        assert set(np.asarray(partial.ids).tolist()) <= set(range(2000))
        assert since_kill < 2.0, since_kill  # the shard timeout is 20 s

        after, t_after = _timed(lambda: client.search("inflight", QUERIES[0], limit=10))
        assert isinstance(after, Unavailable) and t_after < 1.0, (after, t_after)
        kept = set(np.asarray(partial.ids).tolist()) & set(np.asarray(full.ids).tolist())
        _FAULTS["kill-search"] = (
            "Shard node SIGKILLed while two searches were waiting on it (replication 1, 2 shards, shard "
            f"timeout {shard_timeout:g} s); then searched again",
            f"Both in-flight searches returned {since_kill * 1000:.0f} ms after the kill: the strict one "
            f"`UNAVAILABLE` (\"{reliability_doc.cell(msg, 120)}\"), the `allow_partial` one the other shard's "
            f"10 hits with shards_answered=1, shards_total=2 ({len(kept)} of the full top 10). A search after the "
            f"death failed in {t_after * 1000:.0f} ms. The partial response names the missing shard in "
            f"`missing_shards` (\"{reliability_doc.cell(missing, 120)}\").",
            "none (reads only)",
        )
    finally:
        client.close()
        nodes.ensure_up()


# ------------------------------------------------------------ 3. network partition (ip netns)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


@pytest.fixture
def netns_node(tmp_path):
    """A shard-node process inside its own network namespace, reached over a veth pair.

    Yields (address, set_link(up: bool), proc). The namespace, the veth pair and
    the process are removed at teardown, whatever happened.
    """
    if os.geteuid() != 0:
        pytest.skip("the partition test makes a network namespace: it needs root")
    if shutil.which("ip") is None:
        pytest.skip("the partition test needs iproute2's `ip`")
    from quiver.local import REPO_ROOT, child_env, wait_port_file

    tag = f"{os.getpid() % 100000}"
    ns, host_if, ns_if = f"qvns{tag}", f"qvh{tag}", f"qvn{tag}"
    subnet = os.getpid() % 250
    host_ip, node_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
    proc = None
    try:
        try:
            _ip("netns", "add", ns)
        except subprocess.CalledProcessError as e:
            pytest.skip(f"cannot make a network namespace here: {e.stderr.strip()}")
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "addr", "add", f"{node_ip}/30", "dev", ns_if)
        _ip("-n", ns, "link", "set", ns_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")

        pf, log = tmp_path / "ns-node.port", tmp_path / "ns-node.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "quiver.cli", "shard-node", "--listen",
                 f"{node_ip}:0", "--data-dir", str(tmp_path / "ns-node"), "--grace", "2", "--port-file", str(pf)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=child_env(), cwd=str(REPO_ROOT))
        port = wait_port_file(pf, proc, timeout=120, log_file=log)["port"]

        def set_link(up: bool) -> None:
            _ip("link", "set", host_if, "up" if up else "down")

        yield f"{node_ip}:{port}", set_link, proc
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        _ip("link", "del", host_if, check=False)  # removes both ends
        _ip("netns", "del", ns, check=False)


def test_network_partition_fails_over_marks_dead_and_catches_up(nodes, coordinator, netns_node):
    ns_addr, set_link, _ = netns_node
    shard_timeout, write_timeout = 1.5, 3.0
    handle = coordinator([ns_addr, nodes.addresses[0]], shard_timeout=shard_timeout, write_timeout=write_timeout,
                         repair_interval=0.2)
    client = Client(handle.address, timeout=15)
    name = "parted"
    try:
        base = _load(client, name, 2000, quantization="none", shard_number=2, replication_factor=2)
        assert all(set(r) == {ns_addr, nodes.addresses[0]} for r in _replicas(client, name).values())
        expected = [r.ids.tolist() for r in client.search_batch(name, QUERIES, limit=10, exact=True)]

        set_link(False)
        lat = []
        for q, want in zip(QUERIES, expected):  # every call bounded: the client's deadline is 15 s
            r, t = _timed(lambda: client.search(name, q, limit=10, exact=True))
            assert not isinstance(r, Exception), r
            assert r.ids.tolist() == want
            lat.append(t)
        assert max(lat) < shard_timeout + 1.0, lat

        more = np.arange(2000, 2500, dtype=np.uint64)
        _, t_up = _timed(lambda: client.upsert(name, more, _hash_vectors(more),
                                               payloads=[{"i": int(i)} for i in more.tolist()]))
        gone = np.arange(0, 100, dtype=np.uint64)
        deleted, t_del = _timed(lambda: client.delete(name, gone))
        assert deleted == 100
        assert t_up < write_timeout + 1.5 and t_del < write_timeout + 1.5, (t_up, t_del)
        states = _replicas(client, name)
        assert all(s[ns_addr] == "dead" and s[nodes.addresses[0]] == "active" for s in states.values()), states
        after_lat = [_timed(lambda: client.search(name, q, limit=10, exact=True))[1] for q in QUERIES]
        alive = set(range(100, 2500))
        expected = [r.ids.tolist() for r in client.search_batch(name, QUERIES, limit=10, exact=True)]

        set_link(True)
        t0 = time.monotonic()
        _wait(lambda: all(set(s.values()) == {"active"} for s in _replicas(client, name).values()), 30,
              "the partitioned replica to catch up")
        caught_up = time.monotonic() - t0

        # the other way round: only the caught-up replica is left
        nodes.kill(0)
        try:
            _check_exact(client, name, alive, set(range(100)))
            got = [r.ids.tolist() for r in client.search_batch(name, QUERIES, limit=10, exact=True)]
            assert got == expected
            payloads = client.get(name, more, with_payload=True).payloads
            assert payloads == [{"i": int(i)} for i in more.tolist()]
        finally:
            nodes.restart(0)
        _FAULTS["partition"] = (
            "Network partition: the host side of a veth pair to a shard node in its own network namespace set "
            f"down (replication 2, 2 shards, every shard with a replica behind the link; shard timeout "
            f"{shard_timeout:g} s, write timeout {write_timeout:g} s); link up again; then the other node killed",
            f"All {len(lat)} searches answered with exact results; {sum(t > 1.0 for t in lat)} of them picked "
            f"the partitioned replica, waited out the shard timeout and failed over (slowest {max(lat):.2f} s), "
            f"the others took at most {max((t for t in lat if t <= 1.0), default=0) * 1000:.0f} ms. An "
            f"upsert of 500 points waited out the write timeout on the partitioned replicas, was acknowledged "
            f"({t_up:.1f} s) and marked them dead; a delete of 100 after it no longer waited ({t_del:.2f} s) "
            f"and searches then took at most {max(after_lat) * 1000:.0f} ms. With the link back the repair "
            f"loop caught both replicas up in {caught_up:.1f} s; with the other node killed they alone served "
            f"all {len(alive)} points, the partition-time writes and deletes included, and the same exact "
            "results.",
            "none",
        )
    finally:
        client.close()


# ------------------------------------------------------------ 4. stalled node, hedged reads


def test_stalled_node_hedged_reads_and_deadlines(nodes, coordinator):
    handle = coordinator(shard_timeout=5.0, hedge_after=0.05)
    client = Client(handle.address, timeout=30)
    name = "stalled"
    stalled = 1
    pid = nodes.pid(stalled)

    def searches(queries, want, **kw):
        out = []
        for q, w in zip(queries, want):
            r, t = _timed(lambda: client.search(name, q, limit=10, exact=True, **kw))
            assert not isinstance(r, Exception), r
            assert r.ids.tolist() == w
            out.append(t)
        return out

    try:
        _load(client, name, 2000, quantization="none", shard_number=2, replication_factor=2)
        expected = [r.ids.tolist() for r in client.search_batch(name, QUERIES, limit=10, exact=True)]
        searches(QUERIES, expected)  # both replicas of each shard have answered: connections are up
        os.kill(pid, signal.SIGSTOP)
        try:
            hedged = searches(QUERIES, expected) + searches(QUERIES, expected)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert max(hedged) < 1.0, hedged

        # no hedging: a read that picks the stalled replica waits out the shard timeout, then fails over
        handle.stop()
        handle.kw.update(shard_timeout=1.0, hedge_after=None)
        handle.start()  # on a new port
        client.close()
        client = Client(handle.address, timeout=30)
        searches(QUERIES, expected)  # connect to both nodes while they answer (a connection attempt to a
        # stopped process times out in ~0.1 s and fails over at once: a stall of an established
        # connection is the case that waits)
        os.kill(pid, signal.SIGSTOP)
        try:
            plain = searches(QUERIES[:4], expected)
            short = []
            for q in QUERIES[:3]:
                r, t = _timed(lambda: client.search(name, q, limit=10, exact=True, timeout=0.5))
                short.append((type(r).__name__, t))
        finally:
            os.kill(pid, signal.SIGCONT)
        # replicas are tried in turn: some searches pick the stalled one first and wait out the shard timeout
        assert 0.9 < max(plain) < 2.5 and min(plain) < 0.5, plain
        slow = [t for kind, t in short if kind == "DeadlineExceeded"]
        assert slow and all(t < 1.0 for _, t in short), short
        assert client.count(name) == 2000
        _FAULTS["stall"] = (
            "A shard node SIGSTOPped (a real stall: connections open, no answers) holding one replica of "
            "each shard (replication 2, 2 shards); searches through a coordinator with `hedge_after=0.05`, "
            "then one without hedging and a 1 s shard timeout, then with a 0.5 s client deadline",
            f"Hedged: {len(hedged)} searches answered, exact results, in {np.median(hedged) * 1000:.0f} ms median "
            f"and {max(hedged) * 1000:.0f} ms at most (shard timeout 5 s). Unhedged: {len(plain)} searches "
            f"answered, exact results; the {sum(t > 0.9 for t in plain)} that picked the stalled replica first in "
            f"{min(t for t in plain if t > 0.9):.2f}-{max(plain):.2f} s (the shard timeout, then the other replica), "
            f"the others in at most {max(t for t in plain if t <= 0.9) * 1000:.0f} ms. With a "
            f"0.5 s client deadline: {len(slow)} of {len(short)} `DEADLINE_EXCEEDED` within "
            f"{max(t for _, t in short):.2f} s, none hung. (A coordinator whose connection to the stopped node "
            "was not yet up failed over in ~0.1 s: the connection attempt times out.)",
            "none (reads only)",
        )
    finally:
        client.close()


# ------------------------------------------------------------ 5. disk full


@pytest.fixture
def small_disk(tmp_path):
    """A 12 MiB tmpfs under tmp, unmounted at teardown; yields (path, grow(size))."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("the disk-full test mounts a small tmpfs: it needs root and `mount`")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], capture_output=True,
                       text=True, timeout=10)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")

    def grow(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True, timeout=10)

    try:
        yield mnt, grow
    finally:
        subprocess.run(["umount", "-l", str(mnt)], timeout=10)


def test_disk_full_is_resource_exhausted_and_loses_nothing(tmp_path, coordinator, small_disk):
    from conftest import NodeProc
    from quiver.local import spawn, terminate, wait_port_file

    mnt, grow = small_disk
    pf, log = tmp_path / "full.port", tmp_path / "full.log"
    p = spawn("shard-node", ["--listen", "127.0.0.1:0", "--data-dir", str(mnt / "node"), "--grace", "2"], pf, log)
    try:
        node = NodeProc(f"127.0.0.1:{wait_port_file(pf, p, timeout=120, log_file=log)['port']}", 0, p, mnt)
        handle = coordinator([node.address], shard_timeout=10.0)
        client = Client(handle.address, timeout=30)
        name, dim, batch = "filling", 64, 2000
        client.create_collection(name, dim, "dot", quantization="none", shard_number=1)
        rng = np.random.default_rng(3)
        acked, err, batches = 0, None, 0
        t0 = time.monotonic()
        while batches < 60 and time.monotonic() - t0 < 30:
            ids = np.arange(acked, acked + batch, dtype=np.uint64)
            x = rng.standard_normal((batch, dim)).astype(np.float32)
            try:
                client.upsert(name, ids, x, payloads=[{"i": int(i), "pad": "x" * 40} for i in ids.tolist()])
            except QuiverError as e:
                err = e
                break
            acked += batch
            batches += 1
        assert err is not None, f"no error after {batches} batches ({acked} points)"
        assert isinstance(err, ResourceExhausted), repr(err)
        msg = str(err)
        assert "disk full" in msg and "nothing from this write was kept" in msg, msg
        assert client.count(name) == acked  # the failed batch is not half there
        assert len(client.get(name, ids, with_payload=False)) == 0
        got = client.get(name, np.arange(acked, dtype=np.uint64), with_payload=True)
        assert len(got) == acked and got.payloads[-1] == {"i": acked - 1, "pad": "x" * 40}
        r = client.search(name, x[0], limit=5)
        assert len(r) == 5
        again = type(_timed(lambda: client.upsert(name, ids, x))[0]).__name__
        assert again == "ResourceExhausted" and client.count(name) == acked

        grow("64m")  # the environment grows where it can
        client.upsert(name, ids, x, payloads=[{"i": int(i)} for i in ids.tolist()])
        assert client.count(name) == acked + batch
        more = np.arange(acked + batch, acked + 2 * batch, dtype=np.uint64)
        client.upsert(name, more, rng.standard_normal((batch, dim)).astype(np.float32))
        assert client.count(name) == acked + 2 * batch
        client.close()
        _FAULTS["disk-full"] = (
            "Disk full under a shard node: its data dir on a 12 MiB tmpfs; 2,000-point upserts (64-d, with "
            "payloads) through the coordinator until refused; then the tmpfs grown to 64 MiB "
            "(`mount -o remount,size=64m`)",
            f"After {batches} acknowledged batches ({acked:,} points) the next was refused with "
            f"`RESOURCE_EXHAUSTED`: \"{reliability_doc.cell(msg, 200)}\". The count stayed {acked:,} (the batch is "
            f"all or nothing), every acknowledged point was readable with its payload and searches were served; "
            f"retrying while full gave `{again}` again. With room again the same batch and one more were "
            "acknowledged.",
            "none",
        )
    finally:
        terminate([p.pid], timeout=10)


def test_disk_full_during_a_retrain_keeps_the_acknowledged_write(small_disk):
    """A write that triggers a retrain commits its batch first; if the retrain's rewrite of every
    code record then finds the disk full, the write must still succeed (it was kept), and a
    refused write must have kept nothing. Free space is stepped through the window where the
    batch fits and the retrain does not."""
    from shard.config import CollectionConfig, IndexConfig, QuantizationConfig
    from shard.engine import ShardEngine

    mnt, _ = small_disk
    x = np.random.default_rng(0).standard_normal((4000, 64)).astype(np.float32)
    outcomes = []
    for free_kb in range(200, 3000, 100):
        path = mnt / f"e{free_kb}"
        eng = ShardEngine.create(str(path), CollectionConfig(dim=64, quantization=QuantizationConfig(kind="scalar"),
                                                             index=IndexConfig(full_scan_threshold=4000)))
        try:
            eng.upsert(np.arange(3000), x[:3000])  # one list, trained on 3000: the next 1000 retrain it
            st = os.statvfs(mnt)
            with open(mnt / "filler", "wb") as f:
                f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - free_kb * 1024))
            try:
                eng.upsert(np.arange(3000, 4000), x[3000:])
                outcome = "acknowledged"
            except ResourceExhausted:
                outcome = "refused"
            outcomes.append((free_kb, outcome, eng.count(), eng._index.nlist))  # nlist 1: not retrained
            assert eng.count() == (4000 if outcome == "acknowledged" else 3000), outcomes
        finally:
            eng.close()
            (mnt / "filler").unlink(missing_ok=True)
            shutil.rmtree(path, ignore_errors=True)
        if outcome == "acknowledged" and free_kb > 1000:
            break
    refused = [kb for kb, o, *_ in outcomes if o == "refused"]
    kept = [kb for kb, o, *_ in outcomes if o == "acknowledged"]
    assert refused and kept, outcomes
    window = [kb for kb, o, _, nlist in outcomes if o == "acknowledged" and nlist == 1]
    assert window, outcomes  # the case this test is for: the batch fitted, the retrain did not
    _FAULTS["disk-full-retrain"] = (
        "Disk full during a retrain (engine level, tmpfs): a 1,000-point write that takes a 3,000-point "
        "shard past its full-scan threshold, with free space stepped from 200 KiB up in 100 KiB steps",
        f"Refused with `RESOURCE_EXHAUSTED` and nothing kept up to {max(refused)} KiB free; acknowledged "
        f"and kept from {min(kept)} KiB free, including {min(window)}-{max(window)} KiB, where the batch "
        "fitted but the retrain's rewrite of every code record did not (the shard keeps serving from its old "
        "index and retries the retrain on the next write). Before the fix, in that window the write was kept "
        "but the call failed with \"nothing from this write was kept\".",
        "none",
    )


# ------------------------------------------------------------ the report


def write_reliability() -> None:
    lines = [
        "## Faults with real processes",
        "",
        "From `tests/test_faults.py`: real shard-node processes on this machine, killed (SIGKILL), stalled "
        "(SIGSTOP), cut off by a network namespace whose veth link is taken down, or given a disk that fills; "
        "the coordinator in the test process. Every call has a deadline. \"Data lost\" counts acknowledged "
        "writes missing afterwards; each test fails if there is one.",
        "",
        "| fault | what the system did | data lost |",
        "| --- | --- | --- |",
    ]
    for k in _ORDER:
        fault, did, lost = _FAULTS[k]
        lines.append(f"| {reliability_doc.cell(fault, 400)} | {reliability_doc.cell(did, 1200)} | {lost} |")
    reliability_doc.write_section("faults", lines)
