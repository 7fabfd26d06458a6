"""The one table that maps Quiver errors to gRPC status codes, and back.

Servers (coordinator and shard node) turn an exception into a status with
:func:`status_for`; the coordinator's shard client and the client library turn
a status back into the matching ``shard.errors`` class with
:func:`error_for_status`. Nothing else decides a status code.
"""

from __future__ import annotations

import logging

import grpc

from shard import errors as E

log = logging.getLogger(__name__)

#: Error class -> gRPC status. Each class's ``.code`` names the same status
#: (a test holds the two together). Unknown exceptions are INTERNAL.
STATUS_BY_ERROR: dict[type[BaseException], grpc.StatusCode] = {
    E.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    E.NotFound: grpc.StatusCode.NOT_FOUND,
    E.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    E.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    E.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    E.Unavailable: grpc.StatusCode.UNAVAILABLE,
    E.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    E.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    E.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    E.QuiverError: grpc.StatusCode.INTERNAL,
}

_ERROR_BY_STATUS: dict[grpc.StatusCode, type[E.QuiverError]] = {
    code: cls for cls, code in STATUS_BY_ERROR.items() if cls is not E.QuiverError
}


#: Longest status message a server sends, in UTF-8 bytes. The message travels in
#: the grpc-message trailer, percent-encoded; past the client's metadata limit
#: (8-16 KiB) the client gets RESOURCE_EXHAUSTED "Stream removed" instead of the
#: real status, e.g. for a message quoting a 100,000-character collection name.
MAX_MESSAGE_BYTES = 1000


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and message a server answers with when ``exc`` escapes a handler."""
    code, message = _status_for(exc)
    return code, clip_message(message)


def clip_message(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """``message`` cut in the middle to at most ``limit`` UTF-8 bytes (the end usually
    says what to change, e.g. "... is invalid: use 1 to 64 of A-Z a-z 0-9 _ -")."""
    raw = message.encode("utf-8", "replace")
    if len(raw) <= limit:
        return message
    half = (limit - 40) // 2
    head = raw[:half].decode("utf-8", "ignore")
    tail = raw[-half:].decode("utf-8", "ignore")
    return f"{head} ...({len(message) - len(head) - len(tail)} characters cut)... {tail}"


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    for cls in type(exc).__mro__:
        code = STATUS_BY_ERROR.get(cls)
        if code is not None:
            return code, str(exc) or cls.__name__
    # LMDB's "map full" means the storage cannot grow: the caller can act on it.
    if type(exc).__name__ == "MapFullError":
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"storage is full: {exc}"
    log.exception("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def abort(context: grpc.ServicerContext, exc: BaseException) -> None:
    """End the RPC with the status the table gives ``exc`` (raises, as ``context.abort`` does)."""
    code, message = status_for(exc)
    context.abort(code, message)


def error_for_status(code: grpc.StatusCode, message: str) -> E.QuiverError:
    """The ``shard.errors`` instance for a status received from a server."""
    return _ERROR_BY_STATUS.get(code, E.QuiverError)(message)


_STATUS_BY_NUMBER = {s.value[0]: s for s in grpc.StatusCode}

#: Statuses a search stream can be refused with that concern every search on it (the
#: server lacks the method, the credentials are wrong), not the health of the connection.
STREAM_REFUSALS = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def error_for_status_number(number: int, message: str) -> E.QuiverError:
    """``error_for_status`` for a status sent as its number (a stream's ``CallStatus.code``)."""
    return error_for_status(_STATUS_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN), message)


def error_from_rpc(err: grpc.RpcError, where: str = "") -> E.QuiverError:
    """Map a failed call to the matching error, prefixing ``where`` (e.g. which shard)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or str(code)
    if code == grpc.StatusCode.UNAVAILABLE and where:
        details = f"unreachable: {details}"
    return error_for_status(code, f"{where}: {details}" if where else details)
