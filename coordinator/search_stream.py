"""Searches to a shard node over one long-lived stream (``ShardNode.SearchStream``).

A unary gRPC call costs both sides a call's setup and teardown (a new HTTP/2
stream, headers, trailers, a deadline timer): measured on loopback between
grpc.aio and a thread-pool server, a unary round trip takes about twice as
long as a message there and back on an open stream (~500 us against ~250 us,
most of it CPU). A search is a small message, so that overhead is a large
part of what the coordinator and the nodes spend per query.

So the coordinator keeps search streams to each node (``NodeSearchStreams``:
one, and a second one while the first is busy, so two shards of one node are
still searched in parallel), opened on first use and again after they break. Every search on it carries a tag; the node answers in
order, each answer with its tag and either the result or the status the
unary call would have ended with. A search's deadline is kept here (a timer
per search), so a stalled node fails a search with DEADLINE_EXCEEDED exactly
as a unary call would, and the read path fails over to the next replica; a
late answer is dropped. When the stream breaks (the node died or is
stopping), every search waiting on it fails with UNAVAILABLE and the next
search opens a new stream. A node that does not know the stream (an older
version, UNIMPLEMENTED) gets unary calls from then on.
"""

from __future__ import annotations

import asyncio
import itertools

import grpc

from coordinator.errors import STREAM_REFUSALS, error_for_status_number, error_from_rpc
from quiver.v1 import shard_node_pb2 as pb
from shard.errors import DeadlineExceeded, QuiverError, Unavailable



def _expire(fut: asyncio.Future, where: str, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(DeadlineExceeded(f"{where}: no answer within {timeout:g}s"))


class _Open:
    """One open stream call and the searches waiting on it: tag -> (future, where)."""

    __slots__ = ("call", "waiting", "reader", "write_lock")

    def __init__(self, call):
        self.call = call
        self.waiting: dict[int, tuple[asyncio.Future, str]] = {}
        self.reader: asyncio.Task | None = None
        self.write_lock = asyncio.Lock()


#: Most search streams to one node. The node answers a stream's searches one at a
#: time, so this is how many of its searches run at once for one coordinator (each
#: holds one of the node's handler threads: see the node's ``--workers``).
STREAMS_PER_NODE = 2


class NodeSearchStreams:
    """The search streams to one node: a search takes an idle one, opening another
    (up to ``width``) when all are busy, else the least busy."""

    def __init__(self, stub, address: str, width: int = STREAMS_PER_NODE):
        self._stub, self.address, self.width = stub, address, width
        self._streams = [SearchStream(stub, address)]

    @property
    def unsupported(self) -> bool:
        return any(s.unsupported for s in self._streams)

    def _pick(self) -> "SearchStream":
        best = None
        for s in self._streams:
            if s.in_flight == 0:
                return s
            if best is None or s.in_flight < best.in_flight:
                best = s
        if len(self._streams) < self.width:
            best = SearchStream(self._stub, self.address)
            self._streams.append(best)
        return best

    async def search(self, request: pb.ShardSearchRequest, timeout: float, where: str) -> pb.ShardSearchResponse:
        return await self._pick().search(request, timeout, where)

    async def close(self) -> None:
        for s in self._streams:
            await s.close()


class SearchStream:
    """One search stream to a node (use it inside the coordinator's event loop)."""

    def __init__(self, stub, address: str):
        self._stub = stub
        self.address = address
        self._open: _Open | None = None
        self._tags = itertools.count(1)
        #: the node answered UNIMPLEMENTED: use unary Search calls
        self.unsupported = False

    @property
    def in_flight(self) -> int:
        st = self._open
        return 0 if st is None else len(st.waiting)

    def _stream(self) -> _Open:
        st = self._open
        if st is None:
            st = self._open = _Open(self._stub.SearchStream())
            st.reader = asyncio.ensure_future(self._read(st))
        return st

    async def _read(self, st: _Open) -> None:
        failure: str | QuiverError = "the node ended the search stream"
        try:
            while True:
                msg = await st.call.read()
                if msg is grpc.aio.EOF:
                    break
                entry = st.waiting.pop(msg.tag, None)
                if entry is not None and not entry[0].done():
                    entry[0].set_result(msg)
        except grpc.RpcError as e:
            code = e.code()
            if code == grpc.StatusCode.UNIMPLEMENTED:
                self.unsupported = True
            # a stream refused for its credentials fails every search the same way; any other
            # end (node gone, stopping, connection lost) makes this replica unreachable for now
            failure = error_from_rpc(e) if code in STREAM_REFUSALS else f"{code.name}: {e.details()}"
        except asyncio.CancelledError:
            failure = "the coordinator is closing its connections"
            raise
        finally:
            if self._open is st:
                self._open = None
            for fut, where in st.waiting.values():
                if not fut.done():
                    fut.set_exception(_stream_failure(failure, where))
            st.waiting.clear()

    async def search(self, request: pb.ShardSearchRequest, timeout: float, where: str) -> pb.ShardSearchResponse:
        """The node's answer to ``request``, or the error a unary Search would have raised."""
        st = self._stream()
        loop = asyncio.get_running_loop()
        tag = next(self._tags)
        fut = loop.create_future()
        st.waiting[tag] = (fut, where)
        timer = loop.call_later(timeout, _expire, fut, where, timeout)
        try:
            try:
                async with st.write_lock:
                    await st.call.write(pb.ShardSearchStreamRequest(tag=tag, search=request))
            except (grpc.RpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
                # the stream ended under us: the reader fails the waiting searches with its status
                if not fut.done():
                    await asyncio.wait([st.reader], timeout=max(0.0, timeout))
                if not fut.done():
                    fut.set_exception(Unavailable(f"{where}: unreachable: the search stream closed"))
            msg = await fut
        finally:
            timer.cancel()
            st.waiting.pop(tag, None)
        if msg.status.code:
            raise error_for_status_number(msg.status.code, f"{where}: {msg.status.message}")
        return msg.result

    async def close(self) -> None:
        st, self._open = self._open, None
        if st is not None:
            st.call.cancel()
            if st.reader is not None:
                await asyncio.gather(st.reader, return_exceptions=True)


def _stream_failure(failure: str | QuiverError, where: str) -> QuiverError:
    """What a search waiting on a stream that ended gets, named for its shard:
    UNAVAILABLE (so reads fail over), or the error the stream was refused with."""
    if isinstance(failure, QuiverError):
        return type(failure)(f"{where}: {failure}")
    return Unavailable(f"{where}: unreachable: {failure}")
