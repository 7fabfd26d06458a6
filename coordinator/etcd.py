"""The metadata store on etcd (v3 API, over grpc.aio), for clusters of coordinators.

:class:`EtcdBackend` implements :class:`coordinator.metastore.MetaBackend`
with etcd's own primitives, one for one:

* ``range``  -> a linearizable ``KV.Range`` over the prefix;
* ``txn``    -> ``KV.Txn``: one ``MOD == rev`` compare per key (etcd compares a
  missing key as revision 0, so ``0`` means "absent"), success ops = the puts
  (with the lease) and the deletes, no failure ops;
* ``watch``  -> one ``Watch`` stream per call, from ``start_revision``;
  resumes after a transient error from the last delivered revision + 1;
* leases    -> ``LeaseGrant`` plus one ``LeaseKeepAlive`` stream per lease,
  renewed every ttl/3; ``revoke_lease`` and ``close`` revoke.

Every key lives under the backend's ``prefix`` (default ``/quiver/``), so
several clusters can share one etcd; the interface's keys are relative to it.

We speak etcd's gRPC API through stubs generated from our own
``protos/quiver/etcd/rpc.proto`` (the subset we use, same field numbers as
etcd's), not a client library: the PyPI ``etcd3`` client's generated code does
not load under the protobuf we require.

Endpoints are tried in order: a call that meets UNAVAILABLE moves on to the
next one. Unary calls carry a deadline (``timeout``, 5 s by default). Failures
leave as ``shard.errors`` types whose message names the endpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import AsyncIterator

import grpc

from coordinator.errors import error_for_status
from coordinator.metastore import Event, KeyValue, MetaBackend
from quiver.etcd import rpc_pb2 as pb
from quiver.etcd import rpc_pb2_grpc as pb_grpc
from shard import errors as E

log = logging.getLogger(__name__)

#: Status codes after which a watch or keep-alive stream is opened again
#: (possibly on the next endpoint) instead of failing.
_TRANSIENT = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
})

#: etcd reports a compacted revision and a future revision as OUT_OF_RANGE and a
#: malformed request (e.g. a txn that writes one key twice) as INVALID_ARGUMENT;
#: both are the caller's to fix, which shard.errors calls InvalidArgument.
_STATUS_ALIASES = {grpc.StatusCode.OUT_OF_RANGE: grpc.StatusCode.INVALID_ARGUMENT}


class WatchCompacted(E.FailedPrecondition):
    """A watch's start revision is older than etcd's history (it was compacted).

    The caller must reload its state with ``range()`` and watch again from the
    revision that read returned + 1.
    """

    def __init__(self, message: str, compact_revision: int):
        super().__init__(message)
        self.compact_revision = compact_revision


def prefix_end(key: bytes) -> bytes:
    """The exclusive end of the range of keys starting with ``key``: its last byte below
    0xff incremented, the bytes after it dropped (``b"\\0"``, i.e. "to the end", if none)."""
    k = bytearray(key)
    while k and k[-1] == 0xFF:
        k.pop()
    if not k:
        return b"\0"
    k[-1] += 1
    return bytes(k)


def parse_endpoints(endpoints: str | list[str], tls: bool = False) -> list[str]:
    """``"host:port"`` targets from a list or a comma-separated string. A scheme
    may say how: ``http://`` for a plaintext backend, ``https://`` for a TLS one
    (``tls``); a scheme that contradicts the backend's is refused, not ignored."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item.startswith("https://") and not tls:
            raise E.InvalidArgument(f"etcd endpoint {item!r} asks for TLS: give the etcd CA "
                                    "(--etcd-tls-ca / QUIVER_ETCD_TLS_CA), or use http:// or host:port")
        if item.startswith("http://") and tls:
            raise E.InvalidArgument(f"etcd endpoint {item!r} is plaintext, but TLS to etcd is configured: "
                                    "use https:// or host:port")
        out.append(item.removeprefix("https://").removeprefix("http://").rstrip("/"))
    if not out:
        raise E.InvalidArgument(f"no etcd endpoint given in {endpoints!r}: use host:port[,host:port...]")
    return out


class EtcdBackend(MetaBackend):
    """The coordinator's metadata in etcd, shared by every coordinator of the cluster.

    ``endpoints``: ``"host:port"`` targets (a list or a comma-separated string),
    tried in order on UNAVAILABLE. ``prefix``: the folder of this cluster's keys.
    ``timeout``: deadline of each unary call, in seconds. ``reconnect_timeout``:
    how long a watch or keep-alive keeps reopening its stream while every
    endpoint fails before it gives up (``Unavailable``). ``on_lease_lost(lease)``
    is called when etcd says a lease we renew has expired (its keys are gone).
    ``credentials``: call etcd over TLS (``security.channel_credentials``); None = plaintext.

    Create it inside the event loop that uses it (grpc.aio channels belong to a loop).
    """

    def __init__(self, endpoints: str | list[str], prefix: str = "/quiver/", *, timeout: float = 5.0,
                 reconnect_timeout: float = 30.0, reconnect_delay: float = 0.1,
                 on_lease_lost: Callable[[int], None] | None = None,
                 credentials: grpc.ChannelCredentials | None = None):
        if not prefix:
            raise E.InvalidArgument("the etcd key prefix must not be empty (use e.g. /quiver/)")
        self.endpoints = parse_endpoints(endpoints, tls=credentials is not None)
        self._credentials = credentials
        self.prefix = prefix
        self.timeout = timeout
        self.reconnect_timeout = reconnect_timeout
        self.reconnect_delay = reconnect_delay
        self.on_lease_lost = on_lease_lost
        self._raw_prefix = prefix.encode()
        self._current = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._keepalives: dict[int, asyncio.Task] = {}
        self._streams: set[grpc.aio.Call] = set()
        self._closing = asyncio.Event()
        self._closed = False

    # ---- connection ----

    def _channel(self) -> tuple[str, grpc.aio.Channel]:
        """The current endpoint and its channel (one channel per endpoint, opened on first use)."""
        if self._closed:
            raise E.FailedPrecondition(f"the etcd backend ({', '.join(self.endpoints)}) is closed")
        endpoint = self.endpoints[self._current]
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = self._channels[endpoint] = (
                grpc.aio.insecure_channel(endpoint) if self._credentials is None
                else grpc.aio.secure_channel(endpoint, self._credentials))
        return endpoint, channel

    def _next_endpoint(self, failed: str) -> None:
        """Move on from ``failed`` (unless another caller already did)."""
        if self.endpoints[self._current] == failed:
            self._current = (self._current + 1) % len(self.endpoints)

    def _error(self, exc: grpc.RpcError, endpoint: str, what: str) -> E.QuiverError:
        code = exc.code()
        details = exc.details() or code.name
        if code == grpc.StatusCode.UNAVAILABLE:
            message = f"etcd at {endpoint} is unavailable ({what}): {details}"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"etcd at {endpoint} did not answer {what} within {self.timeout:g} s"
        else:
            message = f"etcd at {endpoint} refused {what}: {details}"
        return error_for_status(_STATUS_ALIASES.get(code, code), message)

    async def _unary(self, service: str, method: str, request, what: str):
        """One unary call on the current endpoint, moving on to the next on UNAVAILABLE
        (each endpoint once). A txn retried this way may have been applied by the first
        endpoint; its compares then fail on the retry, as they would for any competing write."""
        for attempt in range(len(self.endpoints)):
            endpoint, channel = self._channel()
            stub = getattr(pb_grpc, f"{service}Stub")(channel)
            try:
                return await getattr(stub, method)(request, timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE and attempt + 1 < len(self.endpoints):
                    log.warning("etcd at %s unavailable (%s), trying the next endpoint", endpoint, what)
                    self._next_endpoint(endpoint)
                    continue
                raise self._error(exc, endpoint, what) from None
        raise AssertionError("unreachable")

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the backend closes first; True if it closed."""
        # asyncio.timeout, not wait_for: wait_for (3.11) can swallow a cancellation that
        # arrives as its inner future completes
        try:
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        except TimeoutError:
            pass
        return self._closed

    # ---- keys ----

    def _key(self, key: str) -> bytes:
        return self._raw_prefix + key.encode()

    def _unkey(self, raw: bytes) -> str:
        return raw[len(self._raw_prefix):].decode()

    # ---- MetaBackend ----

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        start = self._key(prefix)
        resp = await self._unary("KV", "Range", pb.RangeRequest(key=start, range_end=prefix_end(start)),
                                 f"range {prefix!r}")
        # etcd returns the keys in key order
        return [KeyValue(self._unkey(kv.key), kv.value, kv.mod_revision) for kv in resp.kvs], resp.header.revision

    async def txn(self, compares: list[tuple[str, int]], puts: list[tuple[str, bytes]],
                  deletes: list[str], lease: int = 0) -> int | None:
        request = pb.TxnRequest(
            compare=[pb.Compare(key=self._key(k), target=pb.Compare.MOD, result=pb.Compare.EQUAL, mod_revision=rev)
                     for k, rev in compares],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=self._key(k), value=v, lease=lease)) for k, v in puts]
            + [pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=self._key(k))) for k in deletes],
        )
        resp = await self._unary("KV", "Txn", request, f"txn on {len(puts)} puts, {len(deletes)} deletes")
        return resp.header.revision if resp.succeeded else None

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[Event]]:
        """Changes under ``prefix`` from ``start_revision`` on (etcd: 0 = from now), one list
        per committed revision. Raises :class:`WatchCompacted` if etcd no longer has
        ``start_revision`` (or, after a reconnect, the next revision it owes us)."""
        start = self._key(prefix)
        end = prefix_end(start)
        next_revision = start_revision
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while not self._closed:
            endpoint, channel = self._channel()
            call = pb_grpc.WatchStub(channel).Watch()
            self._streams.add(call)
            try:
                await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(
                    key=start, range_end=end, start_revision=next_revision, progress_notify=True)))
                async for resp in call:
                    failing_since = None
                    if resp.canceled:
                        if resp.compact_revision:
                            raise WatchCompacted(
                                f"etcd at {endpoint} compacted its history past revision {next_revision} of the "
                                f"watch on {self.prefix}{prefix} (oldest kept: {resp.compact_revision}); reload "
                                "with range() and watch from its revision + 1", resp.compact_revision)
                        raise E.FailedPrecondition(f"etcd at {endpoint} cancelled the watch on "
                                                   f"{self.prefix}{prefix}: {resp.cancel_reason or 'no reason given'}")
                    if not resp.events:
                        # a progress report: nothing under the prefix up to header.revision
                        if not resp.created and resp.header.revision:
                            next_revision = max(next_revision, resp.header.revision + 1)
                        continue
                    for batch in _by_revision(resp.events, self._unkey):
                        next_revision = batch[-1].mod_revision + 1
                        yield batch
                # the server ended the stream without a status: open it again
                reason = "stream closed"
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    return
                if exc.code() not in _TRANSIENT:
                    raise self._error(exc, endpoint, f"watch on {self.prefix}{prefix}") from None
                reason = f"{exc.code().name}: {exc.details()}"
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    self._next_endpoint(endpoint)
            except asyncio.CancelledError:
                # close() cancels our call, which grpc.aio reports as a cancellation of this task
                if self._closed:
                    return
                raise
            finally:
                self._streams.discard(call)
                call.cancel()
            now = loop.time()
            failing_since = failing_since if failing_since is not None else now
            if now - failing_since > self.reconnect_timeout:
                raise E.Unavailable(f"etcd watch on {self.prefix}{prefix}: no endpoint of "
                                    f"{', '.join(self.endpoints)} answered for {self.reconnect_timeout:g} s "
                                    f"(last: {endpoint}, {reason})")
            log.info("etcd watch on %s%s at %s broke (%s); resuming from revision %d",
                     self.prefix, prefix, endpoint, reason, next_revision)
            if await self._pause(self.reconnect_delay):
                return

    async def grant_lease(self, ttl_seconds: int) -> int:
        resp = await self._unary("Lease", "LeaseGrant", pb.LeaseGrantRequest(TTL=int(ttl_seconds)),
                                 f"lease grant ({ttl_seconds} s)")
        if resp.error:
            raise E.FailedPrecondition(f"etcd at {self.endpoints[self._current]} refused a {ttl_seconds} s lease: "
                                       f"{resp.error}")
        lease = resp.ID
        self._keepalives[lease] = asyncio.create_task(self._keep_alive(lease, resp.TTL or ttl_seconds),
                                                      name=f"etcd-lease-{lease:x}")
        return lease

    async def _keep_alive(self, lease: int, ttl: float) -> None:
        """Renew ``lease`` every ttl/3 over a LeaseKeepAlive stream, reopening it (possibly on
        the next endpoint) after a transient error, until cancelled or the lease is gone."""
        interval = max(ttl / 3, 0.2)
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        while self._renewing(lease):
            endpoint, channel = self._channel()
            call = pb_grpc.LeaseStub(channel).LeaseKeepAlive()
            self._streams.add(call)
            try:
                while self._renewing(lease):
                    await call.write(pb.LeaseKeepAliveRequest(ID=lease))
                    async with asyncio.timeout(self.timeout):
                        resp = await call.read()
                    if not self._renewing(lease):
                        return
                    if resp is grpc.aio.EOF:
                        raise ConnectionError("keep-alive stream closed")
                    if resp.TTL <= 0:
                        log.error("etcd lease %x expired (etcd at %s): its keys are gone", lease, endpoint)
                        self._lease_lost(lease)
                        return
                    failing_since = None
                    if await self._pause(interval):
                        return
            except (grpc.aio.AioRpcError, ConnectionError, TimeoutError) as exc:
                if not self._renewing(lease):
                    return
                code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
                if code is not None and code not in _TRANSIENT:
                    log.error("etcd at %s ended the keep-alive of lease %x: %s", endpoint, lease, exc.details())
                    self._lease_lost(lease)
                    return
                if code in (None, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    self._next_endpoint(endpoint)
                now = loop.time()
                failing_since = failing_since if failing_since is not None else now
                log.warning("etcd keep-alive of lease %x at %s failed (%s), retrying", lease, endpoint,
                            exc.details() if code is not None else type(exc).__name__)
            finally:
                self._streams.discard(call)
                call.cancel()
            # Give up before etcd can have expired it (the last renewal was at most ttl/3 before the
            # first failure): a holder that believes in a lease etcd has dropped is the unsafe case
            # (coordinators stop waiting for it while it still routes writes).
            if failing_since is not None and loop.time() - failing_since > ttl * 2 / 3:
                log.error("etcd lease %x: no endpoint of %s answered for %g s; giving up", lease,
                          ", ".join(self.endpoints), loop.time() - failing_since)
                self._lease_lost(lease)
                return
            if await self._pause(min(self.reconnect_delay * 5, interval)):
                return

    def _lease_lost(self, lease: int) -> None:
        self._keepalives.pop(lease, None)
        if self.on_lease_lost is not None:
            self.on_lease_lost(lease)

    def _renewing(self, lease: int) -> bool:
        """Whether ``lease``'s keep-alive should go on (revoke_lease and close end it first,
        so a cancellation lost inside grpc cannot keep it running)."""
        return not self._closed and lease in self._keepalives

    async def revoke_lease(self, lease: int) -> None:
        task = self._keepalives.pop(lease, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await self._unary("Lease", "LeaseRevoke", pb.LeaseRevokeRequest(ID=lease), f"revoke of lease {lease:x}")
        except E.NotFound:
            pass  # already expired: its keys are gone, which is what revoking wants

    async def close(self) -> None:
        if self._closed:
            return
        for lease in list(self._keepalives):
            try:
                await self.revoke_lease(lease)
            except E.QuiverError as exc:
                # etcd will expire it after its ttl
                log.warning("could not revoke etcd lease %x on close: %s", lease, exc)
        self._closed = True
        self._closing.set()
        for call in list(self._streams):
            call.cancel()
        tasks = list(self._keepalives.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._keepalives.clear()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    # ---- for tests and tools ----

    async def compact(self, revision: int) -> None:
        """Drop etcd's history before ``revision`` (store-wide: every prefix's history)."""
        await self._unary("KV", "Compact", pb.CompactionRequest(revision=revision, physical=True),
                          f"compaction to revision {revision}")


def _by_revision(events, unkey: Callable[[bytes], str]) -> list[list[Event]]:
    """A watch response's events as one list per revision (etcd may send several
    revisions in one response while a watch catches up, but never splits one)."""
    batches: list[list[Event]] = []
    for ev in events:
        item = Event(unkey(ev.kv.key), None if ev.type == pb.Event.DELETE else ev.kv.value, ev.kv.mod_revision)
        if batches and batches[-1][-1].mod_revision == item.mod_revision:
            batches[-1].append(item)
        else:
            batches.append([item])
    return batches
