"""Who may call what: API keys for the public API, a cluster secret for shard nodes, TLS.

    keys = load_api_keys(path, admin=..., read=...)     # None when nothing is configured
    auth = Authorizer.for_api_keys(keys)                # the coordinator's rules
    auth = Authorizer.for_cluster_secret(secret)        # a shard node's rules
    server = new_server(..., interceptors=[auth.aio_interceptor()])   # or .interceptor() (thread pool)

Keys travel as gRPC metadata, ``authorization: Bearer <key>`` or ``x-api-key: <key>``;
the coordinator sends the cluster secret to shard nodes as ``x-quiver-cluster-secret``.
A presented key is hashed (SHA-256) and compared with ``hmac.compare_digest``
against the digest of *every* configured key, without stopping at a match, so
the time taken says nothing about which key (or how much of one) matched. Keys
are kept only as digests and never logged or put in an error message.

Health checks (``grpc.health.v1``) and reflection stay open: Kubernetes probes
and load balancers carry no keys.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
from pathlib import Path
from typing import Iterable

import grpc

log = logging.getLogger("quiver.security")

ADMIN, READ = "admin", "read"
ROLES = (ADMIN, READ)
#: The shortest key or cluster secret accepted (a guessable key is no key).
MIN_KEY_CHARS = 16

API_KEY_HEADER = "x-api-key"
CLUSTER_SECRET_HEADER = "x-quiver-cluster-secret"

#: Methods a read-only key may call; every other method of the guarded services needs admin.
READ_METHODS = frozenset(f"/quiver.v1.Quiver/{m}" for m in
                         ("Search", "SearchStream", "GetPoints", "Count", "GetCollection", "ListCollections"))
#: Services open to everyone (probes, grpcurl's listing).
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                 "/grpc.reflection.v1.ServerReflection/")


class SecurityConfigError(ValueError):
    """A key file, secret or certificate that cannot be used; the message never contains a key."""


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode("utf-8") if isinstance(key, str) else key).digest()


class ApiKeys:
    """Configured keys and their roles, held as SHA-256 digests."""

    def __init__(self, keys: Iterable[tuple[str, str]]):
        entries: list[tuple[bytes, str]] = []
        seen: dict[bytes, str] = {}
        for i, (key, role) in enumerate(keys, 1):
            if role not in ROLES:
                raise SecurityConfigError(f"key #{i}: role must be one of {', '.join(ROLES)}, not {role!r}")
            if len(key) < MIN_KEY_CHARS or key != key.strip():
                raise SecurityConfigError(f"key #{i} ({role}): a key needs at least {MIN_KEY_CHARS} characters "
                                          "and no surrounding whitespace (e.g. `openssl rand -hex 32`)")
            d = _digest(key)
            if seen.get(d, role) != role:
                raise SecurityConfigError(f"key #{i}: the same key is configured as both admin and read")
            seen[d] = role
            entries.append((d, role))
        if not entries:
            raise SecurityConfigError("no API keys configured")
        self._entries = tuple(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:  # never the keys
        return f"ApiKeys({len(self._entries)} keys)"

    def role_of(self, presented: str | bytes | None) -> str | None:
        """The role of ``presented``, or None. Compares against every key, in constant time each."""
        if not presented:
            return None
        d = _digest(presented)
        role = None
        for digest, r in self._entries:  # no early exit: every key is compared
            if hmac.compare_digest(d, digest):
                role = r
        return role


def parse_api_keys(text: str) -> list[tuple[str, str]]:
    """Keys from a key file: JSON or text.

    JSON: ``{"keys": [{"key": "...", "role": "admin"}, ...]}`` or just the list.
    Text: one ``<key> <role>`` per line (role ``admin`` or ``read``); blank
    lines and lines starting with ``#`` are skipped.
    """
    s = text.strip()
    if s.startswith(("{", "[")):
        try:
            doc = json.loads(s)
        except json.JSONDecodeError as e:  # the message quotes no content, only where
            raise SecurityConfigError(f"API key file is not valid JSON (line {e.lineno}, column {e.colno})") from None
        items = doc.get("keys") if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            raise SecurityConfigError('API key file: expected {"keys": [{"key": ..., "role": ...}, ...]}')
        out = []
        for i, item in enumerate(items, 1):
            if not (isinstance(item, dict) and isinstance(item.get("key"), str) and isinstance(item.get("role"), str)):
                raise SecurityConfigError(f"API key file: entry #{i} needs string fields \"key\" and \"role\"")
            out.append((item["key"], item["role"]))
        return out
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise SecurityConfigError(f"API key file, line {n}: expected `<key> <role>`")
        out.append((parts[0], parts[1]))
    return out


def _read(path: str | Path, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise SecurityConfigError(f"cannot read {what} {path}: {e.strerror}") from None


def load_api_keys(path: str | Path | None = None, *, admin: str | None = None,
                  read: str | None = None) -> ApiKeys | None:
    """Keys from ``path`` plus ``admin`` / ``read`` (each comma-separated, for rotation).
    None when none of them is set: the server runs without authentication."""
    keys: list[tuple[str, str]] = []
    if path:
        keys += parse_api_keys(_read(path, "API key file"))
    for role, value in ((ADMIN, admin), (READ, read)):
        keys += [(k.strip(), role) for k in (value or "").split(",") if k.strip()]
    if not path and not keys:
        return None
    return ApiKeys(keys)


def load_cluster_secret(path: str | Path | None = None, value: str | None = None) -> str | None:
    """The coordinator <-> shard node secret, from a file (surrounding whitespace dropped) or a value."""
    secret = _read(path, "cluster secret file").strip() if path else (value or "").strip()
    if not secret:
        if path:
            raise SecurityConfigError(f"cluster secret file {path} is empty")
        return None
    if len(secret) < MIN_KEY_CHARS:
        raise SecurityConfigError(f"the cluster secret needs at least {MIN_KEY_CHARS} characters")
    return secret


def cluster_metadata(secret: str | None) -> tuple[tuple[str, str], ...] | None:
    """The metadata the coordinator sends on every shard-node call."""
    return ((CLUSTER_SECRET_HEADER, secret),) if secret else None


def server_credentials(cert: str | Path, key: str | Path,
                       client_ca: bytes | None = None) -> grpc.ServerCredentials:
    """TLS credentials from a PEM certificate (chain) and its private key;
    ``client_ca`` (PEM CA certificates, ``ca_certificates``): mutual TLS, every
    caller must present a certificate those CAs signed (the handshake fails
    otherwise, before any method or metadata is seen)."""
    cert_pem, key_pem = certificate_pair(cert, key)
    if client_ca is None:
        return grpc.ssl_server_credentials([(key_pem, cert_pem)])
    return grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=client_ca,
                                       require_client_auth=True)


def certificate_pair(cert: str | Path, key: str | Path) -> tuple[bytes, bytes]:
    """(certificate chain, private key) as PEM bytes, read from their files."""
    try:
        cert_pem, key_pem = Path(cert).read_bytes(), Path(key).read_bytes()
    except OSError as e:
        raise SecurityConfigError(f"cannot read TLS certificate or key: {e.filename}: {e.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise SecurityConfigError(f"{cert} holds no PEM certificate")
    if b"PRIVATE KEY-----" not in key_pem:
        raise SecurityConfigError(f"{key} holds no PEM private key")
    return cert_pem, key_pem


def channel_credentials(ca: bytes, identity: tuple[bytes, bytes] | None = None) -> grpc.ChannelCredentials:
    """TLS for calls out (to shard nodes, to etcd): trust the PEM CA certificate(s)
    ``ca``; ``identity``: (certificate chain, private key) PEM shown to a server that
    checks its callers' certificates (mutual TLS)."""
    cert, key = identity if identity is not None else (None, None)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def ca_certificates(path: str | Path) -> bytes:
    """The PEM CA certificate(s) in ``path``, to verify servers' certificates by."""
    try:
        pem = Path(path).read_bytes()
    except OSError as e:
        raise SecurityConfigError(f"cannot read TLS CA certificate: {e.filename}: {e.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise SecurityConfigError(f"{path} holds no PEM certificate")
    return pem


def presented_key(metadata, header: str = API_KEY_HEADER, bearer: bool = True) -> str | None:
    """The key in ``metadata`` (``header``, or ``authorization: Bearer <key>``), or None."""
    for k, v in metadata or ():
        if k == header:
            return v if isinstance(v, str) else None
        if bearer and k == "authorization" and isinstance(v, str):
            scheme, _, token = v.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class Authorizer:
    """Decides, per call, from the method name and the metadata: go on, or a status and message."""

    def __init__(self, keys: ApiKeys, *, header: str, bearer: bool, read_methods: frozenset[str],
                 what: str, metrics=None):
        self.keys, self.header, self.bearer, self.read_methods = keys, header, bearer, read_methods
        self.what = what
        self.metrics = metrics  # RpcMetrics: rejected calls are counted like the others

    @classmethod
    def for_api_keys(cls, keys: ApiKeys, metrics=None) -> "Authorizer":
        return cls(keys, header=API_KEY_HEADER, bearer=True, read_methods=READ_METHODS, what="API key",
                   metrics=metrics)

    @classmethod
    def for_cluster_secret(cls, secret: str, metrics=None) -> "Authorizer":
        return cls(ApiKeys([(secret, ADMIN)]), header=CLUSTER_SECRET_HEADER, bearer=False,
                   read_methods=frozenset(), what="cluster secret", metrics=metrics)

    def decide(self, method: str, metadata) -> tuple[grpc.StatusCode, str] | None:
        if method.startswith(OPEN_PREFIXES):
            return None
        presented = presented_key(metadata, self.header, self.bearer)
        role = self.keys.role_of(presented)
        if role == ADMIN or (role == READ and method in self.read_methods):
            return None
        name = method.rsplit("/", 1)[-1]
        if role == READ:
            code, msg, reason = (grpc.StatusCode.PERMISSION_DENIED,
                                 f"{name} needs an admin API key; this key is read-only", "read-only key")
        elif presented is None:
            how = (f"send it as `authorization: Bearer <key>` or `{self.header}: <key>` metadata" if self.bearer
                   else f"send it as `{self.header}` metadata")
            code, msg, reason = grpc.StatusCode.UNAUTHENTICATED, f"{name}: no {self.what}; {how}", "none"
        else:
            code, msg, reason = grpc.StatusCode.UNAUTHENTICATED, f"{name}: unknown {self.what}", "unknown"
        log.info("rpc rejected", extra={"method": name, "code": code.name, "reason": reason})
        if self.metrics is not None:
            self.metrics.observe(name, code.name, 0.0)
        return code, msg

    def interceptor(self) -> grpc.ServerInterceptor:
        return _Interceptor(self)

    def aio_interceptor(self) -> grpc.aio.ServerInterceptor:
        return _AioInterceptor(self)


def _rejecting(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str, aio: bool):
    """A handler of the same kind as ``handler`` that ends the call with ``code``."""
    if aio:
        async def behaviour(request, context):
            await context.abort(code, message)
    else:
        def behaviour(request, context):
            context.abort(code, message)
    kinds = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
             (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(behaviour, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class _Interceptor(grpc.ServerInterceptor):
    def __init__(self, auth: Authorizer):
        self.auth = auth

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED
            return None
        denied = self.auth.decide(handler_call_details.method, handler_call_details.invocation_metadata)
        return handler if denied is None else _rejecting(handler, *denied, aio=False)


class _AioInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, auth: Authorizer):
        self.auth = auth

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        denied = self.auth.decide(handler_call_details.method, handler_call_details.invocation_metadata)
        return handler if denied is None else _rejecting(handler, *denied, aio=True)


def is_loopback(address: str) -> bool:
    """True when ``host:port`` only listens on this machine."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_logged_open: set[str] = set()


def log_open_once(role: str, address: str, what: str) -> None:
    """Say (once per process and role) that this server runs without ``what``."""
    if role in _logged_open:
        return
    _logged_open.add(role)
    if is_loopback(address):
        log.info(f"{role}: no {what} configured; serving without authentication on loopback",
                 extra={"address": address})
    else:
        log.warning(f"{role}: no {what} configured; anyone who can reach {address} can call every method",
                    extra={"address": address})
