"""The metadata store's contract, held to both backends: LMDB (one coordinator) and etcd (clusters).

The contract tests run once per backend: ``LmdbBackend`` on a temporary
directory and ``EtcdBackend`` on a real etcd process (the session's
``etcd_server``) under a prefix of its own. The etcd-only tests cover what only
a shared store has: two backends ("two coordinators") on one etcd, leases that
outlive or die with their holder, competing transactions, compaction,
endpoint failover and an etcd restart under a watch. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid

import pytest

from coordinator.metastore import Event, KeyValue, LmdbBackend
from shard import errors as E

#: Bound on any single test's coroutine, in seconds.
TEST_TIMEOUT = 15.0
#: Bound on waiting for one watch batch.
WAIT = 5.0


def run(coro, timeout: float = TEST_TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(params=["lmdb", "etcd"])
def make_backend(request, tmp_path):
    """A factory of backends on one store: LMDB in tmp_path (one per test), or etcd under a
    fresh prefix (call it again for a second client of the same keys). Call it inside the loop."""
    if request.param == "lmdb":
        return lambda: LmdbBackend(tmp_path)
    from coordinator.etcd import EtcdBackend

    endpoint = request.getfixturevalue("etcd_server").endpoint
    prefix = f"/quiver-test/{uuid.uuid4().hex}/"
    return lambda **kw: EtcdBackend(endpoint, prefix=prefix, **kw)


@pytest.fixture
def make_etcd(etcd_server):
    from coordinator.etcd import EtcdBackend

    prefix = f"/quiver-test/{uuid.uuid4().hex}/"
    return lambda **kw: EtcdBackend(etcd_server.endpoint, prefix=prefix, **kw)


class Watcher:
    """Consumes a watch on a task, so that the test can write while it runs."""

    def __init__(self, backend, prefix: str, start_revision: int):
        self.batches: asyncio.Queue = asyncio.Queue()
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._consume(backend.watch(prefix, start_revision)))

    async def _consume(self, iterator):
        try:
            async for batch in iterator:
                await self.batches.put(batch)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            self.error = exc
            await self.batches.put(exc)

    async def next(self, timeout: float = WAIT) -> list[Event]:
        item = await asyncio.wait_for(self.batches.get(), timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    async def events(self, n: int, timeout: float = WAIT) -> list[Event]:
        out: list[Event] = []
        while len(out) < n:
            out += await self.next(timeout)
        return out

    async def started(self) -> None:
        # the LMDB backend subscribes on the first step of the iterator
        await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


# ---------------------------------------------------------------- both backends


def test_range_with_prefix(make_backend):
    async def go():
        b = make_backend()
        try:
            await b.txn([], [("a/1", b"x"), ("a/2", b"y"), ("ab", b"z")], [])
            rev = await b.txn([], [("b/1", b"w")], [])
            kvs, at = await b.range("a/")
            assert [(kv.key, kv.value) for kv in kvs] == [("a/1", b"x"), ("a/2", b"y")]
            assert at == rev
            everything, _ = await b.range("")
            assert [kv.key for kv in everything] == ["a/1", "a/2", "ab", "b/1"]
            assert (await b.range("zzz"))[0] == []
        finally:
            await b.close()

    run(go())


def test_txn_success_and_compare_failure(make_backend):
    async def go():
        b = make_backend()
        try:
            rev1 = await b.txn([], [("k", b"1")], [])
            assert (await b.range("k"))[0] == [KeyValue("k", b"1", rev1)]
            rev2 = await b.txn([("k", rev1)], [("k", b"2")], [])
            assert rev2 is not None and rev2 > rev1
            # a stale compare: nothing of the transaction is written
            assert await b.txn([("k", rev1)], [("k", b"3"), ("other", b"x")], []) is None
            assert await b.txn([("k", rev2), ("other", rev2)], [("k", b"4")], []) is None
            kvs, at = await b.range("")
            assert kvs == [KeyValue("k", b"2", rev2)]
            assert at == rev2
        finally:
            await b.close()

    run(go())


def test_compare_on_absent_key(make_backend):
    async def go():
        b = make_backend()
        try:
            rev = await b.txn([("new", 0)], [("new", b"1")], [])
            assert rev is not None
            assert await b.txn([("new", 0)], [("new", b"2")], []) is None  # present now
            await b.txn([("new", rev)], [], ["new"])
            assert await b.txn([("new", 0)], [("new", b"3")], []) is not None  # absent again
        finally:
            await b.close()

    run(go())


def test_revisions_increase(make_backend):
    async def go():
        b = make_backend()
        try:
            revs = [await b.txn([], [(f"k{i % 2}", str(i).encode())], []) for i in range(5)]
            assert revs == sorted(revs) and len(set(revs)) == 5
            kvs, at = await b.range("k")
            assert at == revs[-1]
            assert {kv.key: kv.mod_revision for kv in kvs} == {"k0": revs[4], "k1": revs[3]}
        finally:
            await b.close()

    run(go())


def test_deletes(make_backend):
    async def go():
        b = make_backend()
        try:
            await b.txn([], [("a", b"1"), ("b", b"2")], [])
            rev = await b.txn([], [], ["a", "missing"])
            assert rev is not None
            assert [kv.key for kv in (await b.range(""))[0]] == ["b"]
            # put and delete in one transaction, on different keys
            await b.txn([], [("c", b"3")], ["b"])
            assert [(kv.key, kv.value) for kv in (await b.range(""))[0]] == [("c", b"3")]
        finally:
            await b.close()

    run(go())


def test_watch_delivers_puts_and_deletes_in_order(make_backend):
    async def go():
        b = make_backend()
        try:
            await b.txn([], [("w/old", b"0"), ("x/other", b"0")], [])
            _, rev0 = await b.range("w/")
            w = Watcher(b, "w/", rev0 + 1)
            await w.started()
            r1 = await b.txn([], [("w/a", b"1"), ("w/b", b"2")], [])
            await b.txn([], [("x/not-mine", b"?")], [])
            r2 = await b.txn([], [], ["w/a"])
            r3 = await b.txn([], [("w/b", b"3")], ["w/old"])
            assert await w.next() == [Event("w/a", b"1", r1), Event("w/b", b"2", r1)]  # one batch per commit
            assert await w.next() == [Event("w/a", None, r2)]
            batch = await w.next()
            assert sorted(batch, key=lambda e: e.key) == [Event("w/b", b"3", r3), Event("w/old", None, r3)]
            await w.stop()
        finally:
            await b.close()

    run(go())


def test_lease_keys_vanish_after_revoke(make_backend):
    async def go():
        b = make_backend()
        try:
            lease = await b.grant_lease(10)
            assert lease
            await b.txn([], [("node/me", b"alive")], [], lease=lease)
            await b.txn([], [("config", b"kept")], [])
            assert [kv.key for kv in (await b.range(""))[0]] == ["config", "node/me"]
            await b.revoke_lease(lease)
            assert [kv.key for kv in (await b.range(""))[0]] == ["config"]
        finally:
            await b.close()

    run(go())


def test_close_is_clean(make_backend):
    async def go():
        before = asyncio.all_tasks()
        b = make_backend()
        _, rev = await b.range("")
        w = Watcher(b, "", rev + 1)
        await w.started()
        await b.grant_lease(10)
        await b.txn([], [("k", b"v")], [])
        assert (await w.next())[0].key == "k"
        await asyncio.wait_for(b.close(), 5)
        await asyncio.wait_for(w.task, 5)  # the watch ends, without an error
        assert w.error is None
        await b.close()  # twice is fine
        # no watch or keep-alive of ours left behind (gRPC's own call housekeeping may still be
        # finishing for a moment after its channel closed: not ours to wait for)
        leftover = {t for t in asyncio.all_tasks() - before if "_cygrpc" not in repr(t)}
        assert not leftover, leftover

    run(go())


# ---------------------------------------------------------------- etcd only


def test_etcd_watch_from_an_older_revision_replays(make_etcd):
    async def go():
        b = make_etcd()
        try:
            r1 = await b.txn([], [("k/a", b"1")], [])
            r2 = await b.txn([], [("k/b", b"2")], [])
            r3 = await b.txn([], [], ["k/a"])
            w = Watcher(b, "k/", r1)
            assert await w.events(3) == [Event("k/a", b"1", r1), Event("k/b", b"2", r2), Event("k/a", None, r3)]
            w2 = Watcher(b, "k/", r2)  # from the middle
            assert await w2.next() == [Event("k/b", b"2", r2)]
            await w.stop(), await w2.stop()
        finally:
            await b.close()

    run(go())


def test_etcd_two_coordinators_see_each_other(make_etcd):
    async def go():
        a, b = make_etcd(), make_etcd()
        try:
            _, rev = await a.range("")
            wa, wb = Watcher(a, "meta/", rev + 1), Watcher(b, "meta/", rev + 1)
            ra = await a.txn([], [("meta/from-a", b"A")], [])
            rb = await b.txn([("meta/from-a", ra)], [("meta/from-b", b"B")], [])
            assert rb is not None  # b saw a's write at its revision
            expected = [Event("meta/from-a", b"A", ra), Event("meta/from-b", b"B", rb)]
            assert await wa.events(2) == expected
            assert await wb.events(2) == expected
            await wa.stop(), await wb.stop()
        finally:
            await a.close(), await b.close()

    run(go())


def test_etcd_lease_key_disappears_when_its_holder_closes(make_etcd):
    async def go():
        holder, other = make_etcd(), make_etcd()
        try:
            lease = await holder.grant_lease(30)
            rev = await holder.txn([], [("coordinators/one", b"up")], [], lease=lease)
            assert [kv.key for kv in (await other.range("coordinators/"))[0]] == ["coordinators/one"]
            w = Watcher(other, "coordinators/", rev + 1)
            await holder.close()
            [event] = await w.next()
            assert (event.key, event.value) == ("coordinators/one", None)
            assert (await other.range("coordinators/"))[0] == []
            await w.stop()
        finally:
            await holder.close(), await other.close()

    run(go())


def test_etcd_lease_is_kept_alive_then_expires_when_renewals_stop(make_etcd):
    """A 2 s lease outlives its TTL while renewed; when the holder dies (renewals stop,
    nothing revoked), etcd deletes its key."""
    async def go():
        holder, other = make_etcd(), make_etcd()
        try:
            lease = await holder.grant_lease(2)
            rev = await holder.txn([], [("coordinators/one", b"up")], [], lease=lease)
            await asyncio.sleep(3)
            assert [kv.key for kv in (await other.range("coordinators/"))[0]] == ["coordinators/one"]
            w = Watcher(other, "coordinators/", rev + 1)
            # the holder "crashes": its renewals stop and it never revokes
            task = holder._keepalives.pop(lease)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            [event] = await w.next(timeout=8)
            assert (event.key, event.value) == ("coordinators/one", None)
            await w.stop()
        finally:
            await holder.close(), await other.close()

    run(go(), timeout=20)


def test_etcd_concurrent_cas_exactly_one_wins(make_etcd):
    async def go():
        a, b = make_etcd(), make_etcd()
        try:
            for round_ in range(5):
                key = f"leader/{round_}"
                # both read the key absent, then both try to create it
                ra, rb = await asyncio.gather(a.txn([(key, 0)], [(key, b"a")], []),
                                              b.txn([(key, 0)], [(key, b"b")], []))
                assert (ra is None) != (rb is None), (ra, rb)
                winner = b"a" if ra is not None else b"b"
                [kv] = (await a.range(key))[0]
                assert kv.value == winner and kv.mod_revision == (ra or rb)
                # and both try to replace it, comparing on the revision both read
                ra, rb = await asyncio.gather(a.txn([(key, kv.mod_revision)], [(key, b"a2")], []),
                                              b.txn([(key, kv.mod_revision)], [(key, b"b2")], []))
                assert (ra is None) != (rb is None), (ra, rb)
        finally:
            await a.close(), await b.close()

    run(go())


def test_etcd_watch_from_a_compacted_revision_raises(make_etcd):
    from coordinator.etcd import WatchCompacted

    async def go():
        b = make_etcd()
        try:
            first = await b.txn([], [("c/k", b"1")], [])
            last = await b.txn([], [("c/k", b"2")], [])
            await b.compact(last)
            with pytest.raises(WatchCompacted, match="compacted") as info:
                async for _ in b.watch("c/", first):
                    pass
            assert info.value.compact_revision >= last
            # the documented recovery: read, then watch from that revision + 1
            kvs, rev = await b.range("c/")
            assert kvs == [KeyValue("c/k", b"2", last)]
            w = Watcher(b, "c/", rev + 1)
            r = await b.txn([], [("c/k", b"3")], [])
            assert await w.next() == [Event("c/k", b"3", r)]
            await w.stop()
        finally:
            await b.close()

    run(go())


def test_etcd_unreachable_endpoint_is_unavailable_and_next_endpoint_is_tried(etcd_server):
    from coordinator.etcd import EtcdBackend

    dead = f"127.0.0.1:{_closed_port()}"

    async def go():
        only_dead = EtcdBackend(dead, prefix=f"/quiver-test/{uuid.uuid4().hex}/", timeout=2)
        with pytest.raises(E.Unavailable, match=dead):
            await only_dead.range("")
        await only_dead.close()
        both = EtcdBackend([dead, etcd_server.endpoint], prefix=f"/quiver-test/{uuid.uuid4().hex}/", timeout=2)
        try:
            rev = await both.txn([], [("k", b"v")], [])
            assert (await both.range(""))[0] == [KeyValue("k", b"v", rev)]
        finally:
            await both.close()

    run(go())


def test_etcd_silent_endpoint_is_deadline_exceeded():
    """A server that accepts the connection and never answers: the call ends at its deadline."""
    from coordinator.etcd import EtcdBackend

    with _silent_server() as address:
        async def go():
            b = EtcdBackend(f"http://{address}", prefix="/quiver-test/silent/", timeout=0.5)
            try:
                with pytest.raises(E.DeadlineExceeded, match=address):
                    await b.range("")
            finally:
                await b.close()

        run(go())


def test_etcd_watch_resumes_after_etcd_restarts(tmp_path):
    """The watch reopens its stream when etcd comes back and misses nothing, repeats nothing."""
    from coordinator.etcd import EtcdBackend
    from etcd_util import EtcdUnavailable, start_etcd

    try:
        server = start_etcd(tmp_path, name="restart")
    except EtcdUnavailable as exc:
        pytest.skip(str(exc))

    async def go():
        nonlocal server
        b = EtcdBackend(server.endpoint, prefix="/quiver-test/restart/", timeout=2)
        try:
            r1 = await b.txn([], [("k", b"1")], [])
            w = Watcher(b, "", r1)
            assert await w.next() == [Event("k", b"1", r1)]
            await asyncio.to_thread(server.stop)
            server = await asyncio.to_thread(start_etcd, tmp_path, "restart", 10.0,
                                             server.client_port, server.peer_port)
            r2 = await b.txn([], [("k", b"2")], [])
            assert await w.next() == [Event("k", b"2", r2)]
            assert w.batches.empty()
            await w.stop()
        finally:
            await b.close()

    try:
        run(go())
    finally:
        server.stop()


def test_prefix_end():
    from coordinator.etcd import parse_endpoints, prefix_end

    assert prefix_end(b"/quiver/") == b"/quiver0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert parse_endpoints("http://h1:2379, h2:2379") == ["h1:2379", "h2:2379"]
    with pytest.raises(E.InvalidArgument):
        parse_endpoints(" , ")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _silent_server:
    """A TCP listener on loopback that accepts connections and never sends a byte."""

    def __enter__(self) -> str:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        try:
            while True:
                self.conns.append(self.sock.accept()[0])
        except OSError:
            pass

    def __exit__(self, *exc) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_etcd_over_tls_with_client_certificates(tmp_path):
    """An etcd that serves TLS only and checks client certificates (--client-cert-auth):
    the backend with its CA and a certificate that etcd's client CA issued reads and
    writes; plaintext, or TLS without a certificate, gets no connection; an endpoint
    whose scheme contradicts the backend's TLS setting is refused up front. A
    coordinator started with --etcd-tls-* keeps its metadata there."""
    import grpc

    from coordinator.etcd import EtcdBackend
    from etcd_util import EtcdUnavailable, start_etcd
    from quiver.client import Client
    from quiver.local import spawn, terminate, wait_port_file
    from quiver.security import channel_credentials as etcd_credentials
    from tls_util import self_signed

    for d in ("server", "client"):
        (tmp_path / d).mkdir()
    server_cert, server_key = self_signed(tmp_path / "server", "IP:127.0.0.1")
    client_cert, client_key = self_signed(tmp_path / "client", "DNS:quiver-coordinator")
    ca, identity = server_cert.read_bytes(), (client_cert.read_bytes(), client_key.read_bytes())
    creds = etcd_credentials(ca, identity)
    try:
        server = start_etcd(tmp_path / "etcd", tls=(server_cert, server_key, client_cert),
                            probe_credentials=grpc.ssl_channel_credentials(ca, identity[1], identity[0]))
    except EtcdUnavailable as e:
        pytest.skip(str(e))
    prefix = f"/quiver-test/{uuid.uuid4().hex}/"
    try:
        async def go():
            b = EtcdBackend(f"https://{server.endpoint}", prefix=prefix, timeout=5, credentials=creds)
            try:
                rev = await b.txn([], [("k", b"v")], [])
                assert (await b.range(""))[0] == [KeyValue("k", b"v", rev)]
            finally:
                await b.close()
            for refused in (EtcdBackend(server.endpoint, prefix=prefix, timeout=2),
                            EtcdBackend(server.endpoint, prefix=prefix, timeout=2,
                                        credentials=etcd_credentials(ca))):
                try:
                    with pytest.raises((E.Unavailable, E.DeadlineExceeded)):
                        await refused.range("")
                finally:
                    await refused.close()

        run(go())
        with pytest.raises(E.InvalidArgument, match="asks for TLS"):
            EtcdBackend(f"https://{server.endpoint}", prefix=prefix)
        with pytest.raises(E.InvalidArgument, match="is plaintext"):
            EtcdBackend(f"http://{server.endpoint}", prefix=prefix, credentials=creds)

        log = tmp_path / "coordinator.log"
        p = spawn("coordinator", ["--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "coord"), "--grace", "2",
                                  "--etcd-endpoints", server.endpoint, "--etcd-prefix", prefix,
                                  "--etcd-tls-ca", str(server_cert), "--etcd-tls-cert", str(client_cert),
                                  "--etcd-tls-key", str(client_key)], tmp_path / "coord.port", log)
        try:
            info = wait_port_file(tmp_path / "coord.port", p, 120, log)
            with Client(f"127.0.0.1:{info['port']}", timeout=30) as c:
                assert c.list_collections() == []

            async def keys():
                b = EtcdBackend(server.endpoint, prefix=prefix, timeout=5, credentials=creds)
                try:
                    return [kv.key for kv in (await b.range(""))[0]]
                finally:
                    await b.close()

            assert any(k != "k" for k in run(keys()))  # the coordinator wrote its own keys there
        finally:
            terminate([p.pid], timeout=10)
            p.wait(timeout=10)
    finally:
        server.stop()
