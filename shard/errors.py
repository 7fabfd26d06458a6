"""Typed errors raised by the shard engine.

Every error carries a message a person can act on. The gRPC layers map these
classes to status codes in exactly one table (``coordinator/errors.py`` and
``shard/server.py`` import ``STATUS_BY_ERROR``); nothing else decides a code.
"""

from __future__ import annotations


class QuiverError(Exception):
    """Base class of every error Quiver raises on purpose."""

    code = "INTERNAL"


class InvalidArgument(QuiverError):
    """The request is malformed: wrong dimension, NaN, bad limit, bad payload..."""

    code = "INVALID_ARGUMENT"


class NotFound(QuiverError):
    """A collection, shard or node that does not exist."""

    code = "NOT_FOUND"


class AlreadyExists(QuiverError):
    """Creating something whose name is taken."""

    code = "ALREADY_EXISTS"


class ResourceExhausted(QuiverError):
    """Storage is full (LMDB map cannot grow, disk full) or a message is too large."""

    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(QuiverError):
    """The operation is valid but the system is not in a state to run it."""

    code = "FAILED_PRECONDITION"


class Unavailable(QuiverError):
    """A shard or node could not be reached."""

    code = "UNAVAILABLE"


class DeadlineExceeded(QuiverError):
    """The call's deadline passed before every part answered."""

    code = "DEADLINE_EXCEEDED"


class PermissionDenied(QuiverError):
    code = "PERMISSION_DENIED"


class Unauthenticated(QuiverError):
    code = "UNAUTHENTICATED"
