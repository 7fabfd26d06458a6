"""What every Quiver gRPC server has: message limits, the standard health and
reflection services, Prometheus metrics, status codes from the one error
table, and a graceful stop on SIGTERM.

Two server flavours, measured on a 2-core machine:
  * shard nodes use the thread-pool server: ~180 us of CPU per call under load
    against ~290 us for grpc.aio, and the engine's kernels release the GIL, so
    searches run in parallel in the handler threads;
  * the coordinator uses grpc.aio: its work is waiting on shards, and one
    event loop fans out (``asyncio.gather``) and coalesces concurrent searches
    without a thread per call.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import os
import signal
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from coordinator.errors import status_for
from shard.errors import InvalidArgument
from quiver.v1 import common_pb2

log = logging.getLogger("quiver.server")

DEFAULT_MAX_MESSAGE_MB = 64
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.5, 1, 2, 5, 10, 30)


def message_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel/server options capping message sizes. A message over the cap fails
    with RESOURCE_EXHAUSTED "received message larger than max (N vs. M)"."""
    return [
        ("grpc.max_receive_message_length", int(max_message_bytes)),
        ("grpc.max_send_message_length", int(max_message_bytes)),
    ]


def _server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return message_options(max_message_bytes) + [
        ("grpc.so_reuseport", 0),  # a taken port is an error, not a silently shared one
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ]


class _Undecodable:
    """What a guarded deserializer returns for bytes that are not the method's message."""

    def __init__(self, error: Exception):
        self.error = error


UNDECODABLE = "the request could not be parsed as this method's protobuf message ({})"


def undecodable(message) -> InvalidArgument | None:
    """For a message read from a request stream: the error to answer it with when
    its bytes were not the method's message, else None."""
    if isinstance(message, _Undecodable):
        return InvalidArgument(UNDECODABLE.format(message.error))
    return None


def _guarded(handler, aio: bool):
    """``handler`` with a deserializer that never raises: undecodable request bytes
    (corrupt protobuf, invalid UTF-8 in a string field) become INVALID_ARGUMENT
    instead of the UNKNOWN gRPC answers when a deserializer raises."""
    if handler is None or handler.request_deserializer is None:
        return handler
    decode = handler.request_deserializer

    def safe(data: bytes):
        try:
            return decode(data)
        except Exception as e:  # protobuf raises DecodeError, or ValueError/UnicodeDecodeError
            return _Undecodable(e)

    if handler.request_streaming:
        if not handler.response_streaming:  # client streams (snapshot restore) keep gRPC's handling
            return handler
        # a multiplexed stream answers an undecodable message with its status (see ``undecodable``)
        inner = handler.stream_stream
        return grpc.stream_stream_rpc_method_handler(inner, request_deserializer=safe,
                                                     response_serializer=handler.response_serializer)

    inner = handler.unary_stream if handler.response_streaming else handler.unary_unary
    message = UNDECODABLE
    if aio and inspect.iscoroutinefunction(inner):
        async def behaviour(request, context):
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message.format(request.error))
            return await inner(request, context)
    elif aio and inspect.isasyncgenfunction(inner):
        async def behaviour(request, context):
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message.format(request.error))
            async for item in inner(request, context):
                yield item
    else:
        def behaviour(request, context):
            if isinstance(request, _Undecodable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, message.format(request.error))
            return inner(request, context)
    make = grpc.unary_stream_rpc_method_handler if handler.response_streaming else grpc.unary_unary_rpc_method_handler
    return make(behaviour, request_deserializer=safe, response_serializer=handler.response_serializer)


class _DecodeGuard(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):
        return _guarded(continuation(handler_call_details), aio=False)


class _AioDecodeGuard(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        return _guarded(await continuation(handler_call_details), aio=True)


def new_server(max_message_bytes: int, interceptors=None) -> grpc.aio.Server:
    """``interceptors``: e.g. the authorizer's (``quiver.security``); the decode
    guard always runs innermost, so authorisation is decided first."""
    return grpc.aio.server(options=_server_options(max_message_bytes),
                           interceptors=list(interceptors or []) + [_AioDecodeGuard()])


def new_thread_server(max_message_bytes: int, workers: int, interceptors=None) -> grpc.Server:
    return grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
                       options=_server_options(max_message_bytes),
                       interceptors=list(interceptors or []) + [_DecodeGuard()])


def bind(server, address: str, credentials: grpc.ServerCredentials | None = None) -> int:
    """Listen on ``address``: TLS with ``credentials``, plaintext without. Returns the port."""
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}")
    return port


class RpcMetrics:
    """Per-server Prometheus registry with request counts and latencies.

    Each server gets its own registry (several servers can live in one test
    process); ``start_metrics`` exposes it over HTTP.
    """

    def __init__(self, role: str):
        self.role = role
        self.registry = CollectorRegistry()
        self.requests = Counter("quiver_requests", "RPCs handled, by method and status code",
                                ["role", "method", "code"], registry=self.registry)
        self.latency = Histogram("quiver_request_seconds", "RPC latency, by method", ["role", "method"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self._children: dict = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        pair = self._children.get(key)
        if pair is None:  # label lookups are cached: this runs on every request
            pair = self._children[key] = (self.requests.labels(self.role, method, code),
                                          self.latency.labels(self.role, method))
        pair[0].inc()
        pair[1].observe(seconds)


def stream_status(method: str, exc: Exception):
    """How a multiplexed stream answers one failed request: a ``CallStatus`` with
    the code and message a unary call would have ended with (logged the same
    way), and the code's name for the metrics."""
    status, message = _failed(method, exc)
    return common_pb2.CallStatus(code=status.value[0], message=message), status.name


def _failed(method: str, exc: Exception) -> tuple[grpc.StatusCode, str]:
    status, message = status_for(exc)
    level = logging.WARNING if status in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE,
                                          grpc.StatusCode.DEADLINE_EXCEEDED) else logging.DEBUG
    log.log(level, "rpc failed", extra={"method": method, "code": status.name, "error": message})
    return status, message


def rpc(fn: Callable) -> Callable:
    """Decorate a servicer method (sync, sync generator for a response stream, or
    async): errors leave through the error table, and the call is counted and
    timed in ``self.metrics``."""
    method = fn.__name__

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def handler(self, request, context):
            t0 = time.perf_counter()
            code = "OK"
            try:
                return await fn(self, request, context)
            except Exception as exc:  # noqa: BLE001 - every error leaves as a status
                status, message = _failed(method, exc)
                code = status.name
                await context.abort(status, message)
            finally:
                self.metrics.observe(method, code, time.perf_counter() - t0)

        return handler

    if inspect.isasyncgenfunction(fn):  # an aio response stream
        @functools.wraps(fn)
        async def async_stream_handler(self, request, context):
            t0 = time.perf_counter()
            code = "OK"
            try:
                async for msg in fn(self, request, context):
                    yield msg
            except (GeneratorExit, asyncio.CancelledError):  # the client went away mid-stream
                code = "CANCELLED"
                raise
            except Exception as exc:  # noqa: BLE001 - every error leaves as a status
                status, message = _failed(method, exc)
                code = status.name
                await context.abort(status, message)
            finally:
                self.metrics.observe(method, code, time.perf_counter() - t0)

        return async_stream_handler

    if inspect.isgeneratorfunction(fn):  # a response stream: errors can come mid-stream
        @functools.wraps(fn)
        def stream_handler(self, request, context):
            t0 = time.perf_counter()
            code = "OK"
            try:
                yield from fn(self, request, context)
            except GeneratorExit:  # the client went away mid-stream
                code = "CANCELLED"
                raise
            except Exception as exc:  # noqa: BLE001 - every error leaves as a status
                status, message = _failed(method, exc)
                code = status.name
                context.abort(status, message)
            finally:
                self.metrics.observe(method, code, time.perf_counter() - t0)

        return stream_handler

    @functools.wraps(fn)
    def sync_handler(self, request, context):
        t0 = time.perf_counter()
        code = "OK"
        try:
            return fn(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every error leaves as a status
            status, message = _failed(method, exc)
            code = status.name
            context.abort(status, message)
        finally:
            self.metrics.observe(method, code, time.perf_counter() - t0)

    return sync_handler


def new_health(aio: bool = True):
    return health.aio.HealthServicer() if aio else health.HealthServicer(experimental_non_blocking=True)


def _register(server, service_names: list[str], hs) -> list[str]:
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    names = [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    return ["", *service_names]


async def add_standard_services(server: grpc.aio.Server, service_names: list[str],
                                hs: health.aio.HealthServicer | None = None) -> health.aio.HealthServicer:
    """Register grpc.health.v1 (every service SERVING) and server reflection on an aio server."""
    hs = hs or new_health()
    for name in _register(server, service_names, hs):
        await hs.set(name, health_pb2.HealthCheckResponse.SERVING)
    return hs


async def start_health_server(address: str, hs: health.aio.HealthServicer) -> tuple[grpc.aio.Server, int]:
    """A plaintext server with only ``hs`` (grpc.health.v1) on ``address``: for probes that
    cannot speak TLS (the kubelet's gRPC probes) when the API port serves TLS."""
    server = new_server(1 << 20)
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    port = bind(server, address)
    await server.start()
    return server, port


def start_health_server_sync(address: str, hs: health.HealthServicer) -> tuple[grpc.Server, int]:
    """``start_health_server`` for a thread-pool server's health servicer (a shard node)."""
    server = new_thread_server(1 << 20, 2)
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    port = bind(server, address)
    server.start()
    return server, port


def add_standard_services_sync(server: grpc.Server, service_names: list[str],
                               hs: health.HealthServicer | None = None) -> health.HealthServicer:
    """The same for a thread-pool server."""
    hs = hs or new_health(aio=False)
    for name in _register(server, service_names, hs):
        hs.set(name, health_pb2.HealthCheckResponse.SERVING)
    return hs


def write_port_file(path: str | os.PathLike, **info) -> None:
    """Write ``info`` as JSON atomically (readers never see a half-written file)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **info}))
    os.replace(tmp, path)


def start_metrics(port: int | None, registry: CollectorRegistry, host: str = "0.0.0.0"):
    """Serve ``registry`` on http://host:port/metrics; port 0 = any free port. Returns (httpd, port)."""
    if port is None or port < 0:
        return None, None
    httpd, _thread = start_http_server(port, addr=host, registry=registry)
    return httpd, httpd.server_port


class AioStreams:
    """The open multiplexed streams of an aio server, so a stopping server can end
    them once the requests they are answering are answered (a stream waiting for
    its next request would otherwise hold the stop for the whole grace period)."""

    def __init__(self):
        self._open: dict[asyncio.Task, set[asyncio.Task]] = {}
        #: set by ``end_all``: a handler cancelled while it is set ends its stream
        #: normally (see ``ended``) so the call finishes with OK at once
        self.stopping = False

    def open(self) -> set[asyncio.Task]:
        """Register the calling handler's task; returns the set to keep its answers' tasks in."""
        answering: set[asyncio.Task] = set()
        self._open[asyncio.current_task()] = answering
        return answering

    def close(self) -> None:
        self._open.pop(asyncio.current_task(), None)

    def ended(self) -> bool:
        """In a handler that caught CancelledError: True when the cancel is ``end_all``'s
        (the handler should then return normally: a cancelled handler leaves its call
        open until the server's grace runs out), False when it should re-raise."""
        if not self.stopping:
            return False
        asyncio.current_task().uncancel()
        return True

    async def end_all(self, timeout: float) -> None:
        self.stopping = True
        streams = list(self._open.items())
        pending = [t for _, answering in streams for t in answering]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for handler, _ in streams:
            handler.cancel()


async def stop_server(server: grpc.aio.Server, grace: float, streams: AioStreams | None = None) -> None:
    """Refuse new calls, give in-flight ones ``grace`` seconds, and end ``streams``
    as soon as the requests they are answering are answered."""
    stopping = asyncio.ensure_future(server.stop(grace))
    if streams is not None:
        await streams.end_all(grace)
    await stopping


async def run_until_signal(server: grpc.aio.Server, health_servicer: health.aio.HealthServicer, *, grace: float,
                           on_stop: Callable[[], Awaitable[None]], metrics_httpd=None,
                           streams: AioStreams | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully.

    Health turns NOT_SERVING first (load balancers stop routing), in-flight
    calls get ``grace`` seconds to finish, and only then ``on_stop`` closes the
    storage, so no LMDB transaction is cut in half.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def handle(signum: int) -> None:
        received.append(signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle, sig)
    await stop.wait()
    log.info("stopping", extra={"signal": signal.Signals(received[0]).name, "grace_s": grace})
    await health_servicer.enter_graceful_shutdown()
    await stop_server(server, grace, streams)
    await on_stop()
    if metrics_httpd is not None:
        metrics_httpd.shutdown()
    log.info("stopped")


def run_until_signal_sync(server: grpc.Server, health_servicer: health.HealthServicer, *, grace: float,
                          on_stop: Callable[[], None], metrics_httpd=None,
                          end_streams: Callable[[], None] | None = None) -> None:
    """``run_until_signal`` for a thread-pool server (call from the main thread).
    ``end_streams``: once new calls are refused, end long-lived streams (each
    after the request it is answering), which would otherwise hold the stop
    for the whole grace period."""
    stop = threading.Event()
    received: list[int] = []

    def handle(signum, _frame) -> None:
        received.append(signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
    while not stop.wait(3600):
        pass
    log.info("stopping", extra={"signal": signal.Signals(received[0]).name, "grace_s": grace})
    health_servicer.enter_graceful_shutdown()
    stopped = server.stop(grace)
    if end_streams is not None:
        end_streams()
    stopped.wait()
    on_stop()
    if metrics_httpd is not None:
        metrics_httpd.shutdown()
    log.info("stopped")
