"""The client's search stream to a coordinator (``Quiver.SearchStream``).

A unary call's setup and teardown cost the client and the coordinator more
than a small search message does (see coordinator/search_stream.py for the
measurement), so ``Client.search`` sends its searches on one long-lived
stream. Any number of threads may search at once: each search carries a tag,
a reader thread hands every answer to the thread that waits for it, and a
search's deadline is kept by that thread's wait, so it fails with
DEADLINE_EXCEEDED as a unary call would. When the stream ends (the
coordinator restarted, the connection dropped) the searches waiting on it
fail with UNAVAILABLE and the next search opens a new one. A coordinator
without the stream (UNIMPLEMENTED) gets unary calls from then on.
"""

from __future__ import annotations

import itertools
import queue
import threading
import weakref

import grpc

from coordinator.errors import STREAM_REFUSALS, error_for_status_number, error_from_rpc
from quiver.v1 import quiver_pb2 as pb
from shard.errors import DeadlineExceeded, QuiverError, Unavailable

_END = object()


class _Slot:
    __slots__ = ("event", "answer", "failure")

    def __init__(self):
        self.event = threading.Event()
        self.answer: pb.SearchStreamResponse | None = None
        self.failure: QuiverError | None = None


class _Open:
    """One stream call: its request queue, its responses and the searches waiting on it."""

    def __init__(self):
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.responses = None
        self.waiting: dict[int, _Slot] = {}


class SearchStream:
    """Searches over one stream, from any number of threads."""

    def __init__(self, method: grpc.StreamStreamMultiCallable, address: str, metadata=None):
        self._method = method
        self.address = address
        self._metadata = metadata
        self._lock = threading.Lock()
        self._open: _Open | None = None
        self._tags = itertools.count(1)
        #: the coordinator answered UNIMPLEMENTED: search with unary calls
        self.unsupported = False

    def _register(self, tag: int, slot: _Slot) -> _Open:
        with self._lock:
            st = self._open
            if st is None:
                st = self._open = _Open()
                st.responses = self._method(iter(st.requests.get, _END), metadata=self._metadata)
                threading.Thread(target=_read, args=(st, weakref.ref(self)), daemon=True,
                                 name="quiver-search-stream").start()
            st.waiting[tag] = slot
            return st

    def _ended(self, st: _Open, failure: QuiverError) -> None:
        with self._lock:
            if self._open is st:
                self._open = None
            waiting, st.waiting = st.waiting, {}
        for slot in waiting.values():
            slot.failure = type(failure)(str(failure))  # one instance per raising thread
            slot.event.set()

    def search(self, request: pb.SearchRequest, timeout: float | None) -> pb.SearchResponse:
        """The coordinator's answer, or the error a unary Search would have raised."""
        tag, slot = next(self._tags), _Slot()
        st = self._register(tag, slot)
        st.requests.put(pb.SearchStreamRequest(tag=tag, search=request, timeout_seconds=timeout or 0.0))
        if not slot.event.wait(timeout):
            st.waiting.pop(tag, None)
            raise DeadlineExceeded(f"Deadline Exceeded: no answer from {self.address} within {timeout:g}s")
        if slot.failure is not None:
            raise slot.failure
        msg = slot.answer
        if msg.status.code:
            raise error_for_status_number(msg.status.code, msg.status.message)
        return msg.result

    def close(self) -> None:
        with self._lock:
            st, self._open = self._open, None
        if st is not None:
            st.requests.put(_END)
            st.responses.cancel()


def _read(st: _Open, owner: weakref.ref) -> None:
    """The reader thread: hand each answer to its waiting search until the stream ends."""
    failure: QuiverError = Unavailable("the coordinator ended the search stream")
    unsupported = False
    try:
        for msg in st.responses:
            slot = st.waiting.pop(msg.tag, None)
            if slot is not None:
                slot.answer = msg
                slot.event.set()
    except grpc.RpcError as e:
        code = e.code()
        unsupported = code == grpc.StatusCode.UNIMPLEMENTED
        if code in STREAM_REFUSALS:
            failure = error_from_rpc(e)
        else:
            failure = Unavailable(f"the search stream to the coordinator ended: {code.name}: {e.details()}")
    finally:
        st.requests.put(_END)  # lets gRPC's request-sending thread finish
        stream = owner()
        if stream is not None:
            stream.unsupported = stream.unsupported or unsupported
            stream._ended(st, failure)
