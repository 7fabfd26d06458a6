"""`quiver admin ...`: operate a running cluster through the coordinator's QuiverAdmin API.

Kept apart from quiver/cli.py (which runs nodes) and registered there with
``main.add_command(admin)``. Every command is a thin shell over
:class:`quiver.admin_client.AdminClient`: parse options, call, print a table
(or JSON with --json), and turn errors into the exit codes below.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from shard import errors as E
from shard.config import BINARY_ENCODINGS, BINARY_QUERY_ENCODINGS, DISTANCES, PRODUCT_COMPRESSIONS, QUANTIZATIONS

if TYPE_CHECKING:  # grpc and the client load when a command runs, not when `quiver` starts
    from quiver.admin_client import AdminClient, CollectionDetails, NodeInfo, Operation

# Exit codes. click itself exits 2 on a usage error.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_AUTH, EXIT_SERVER = 0, 1, 2, 3, 4, 5, 6

#: Error class -> exit code; anything else the server reports (INTERNAL, RESOURCE_EXHAUSTED,
#: UNIMPLEMENTED, ...) and a corrupt snapshot stream exit EXIT_SERVER.
_EXIT_BY_ERROR: tuple[tuple[tuple[type[E.QuiverError], ...], int], ...] = (
    ((E.NotFound, E.InvalidArgument, E.AlreadyExists, E.FailedPrecondition), EXIT_REFUSED),
    ((E.Unavailable, E.DeadlineExceeded), EXIT_UNREACHABLE),
    ((E.Unauthenticated, E.PermissionDenied), EXIT_AUTH),
)

ADMIN_HELP = """Operate a running cluster: nodes, shard placement, snapshots.

Talks to the coordinator (--address, env QUIVER_ADDRESS) with an admin API key
(--api-key, env QUIVER_API_KEY) when the cluster requires keys, over TLS when
--tls-ca (env QUIVER_TLS_CA) or --tls is given. Every command takes --json for
machine-readable output.

\b
Exit codes:
  0  ok
  1  aborted at a confirmation prompt, or the operation failed
  2  usage error (bad option or argument)
  3  refused: NOT_FOUND, INVALID_ARGUMENT, ALREADY_EXISTS, FAILED_PRECONDITION,
     or a snapshot file that is corrupt or does not match its checksums
  4  unreachable: UNAVAILABLE, DEADLINE_EXCEEDED (also --timeout passing
     while waiting for an operation)
  5  not allowed: UNAUTHENTICATED, PERMISSION_DENIED
  6  any other server error (INTERNAL, UNIMPLEMENTED, ...), or a snapshot
     stream whose data did not match its checksum
Errors are printed to stderr as "error: <message>".
"""


# ------------------------------------------------------------------ plumbing


class Conn:
    """The connection options of one command; the client is made on first use."""

    def __init__(self, address: str, api_key: str | None, tls_ca: str | None, tls: bool, timeout: float,
                 as_json: bool, tls_cert: str | None = None, tls_key: str | None = None):
        self.address, self.timeout, self.as_json = address, timeout, as_json
        self._kw = dict(api_key=api_key or None, ca_cert=tls_ca, tls=tls, tls_cert=tls_cert, tls_key=tls_key)
        self._client: AdminClient | None = None

    def __repr__(self) -> str:  # never the key
        return f"Conn({self.address!r})"

    @property
    def client(self) -> AdminClient:
        if self._client is None:
            from quiver.admin_client import AdminClient

            self._client = AdminClient(self.address, timeout=self.timeout, **self._kw)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _conn_options(fn):
    opts = [
        click.option("--address", envvar="QUIVER_ADDRESS", default="localhost:6334", show_default=True,
                     help="The coordinator, host:port. [env QUIVER_ADDRESS]"),
        click.option("--api-key", envvar="QUIVER_API_KEY", default=None, show_default=False,
                     help="Admin API key (better set through the environment). [env QUIVER_API_KEY]"),
        click.option("--tls-ca", envvar="QUIVER_TLS_CA", default=None,
                     type=click.Path(exists=True, dir_okay=False),
                     help="Connect over TLS, trusting this PEM CA certificate. [env QUIVER_TLS_CA]"),
        click.option("--tls", envvar="QUIVER_TLS", is_flag=True, default=False,
                     help="Connect over TLS, trusting the system's roots. [env QUIVER_TLS]"),
        click.option("--tls-cert", envvar="QUIVER_CLIENT_TLS_CERT", default=None,
                     type=click.Path(exists=True, dir_okay=False),
                     help="Client certificate (PEM), for a coordinator that requires one (mutual TLS). "
                          "[env QUIVER_CLIENT_TLS_CERT]"),
        click.option("--tls-key", envvar="QUIVER_CLIENT_TLS_KEY", default=None,
                     type=click.Path(exists=True, dir_okay=False),
                     help="Private key (PEM) of --tls-cert. [env QUIVER_CLIENT_TLS_KEY]"),
        click.option("--timeout", envvar="QUIVER_TIMEOUT", type=click.FloatRange(min=0, min_open=True),
                     default=600.0, show_default=True,
                     help="Deadline in seconds of each call, and of waiting for an operation. [env QUIVER_TIMEOUT]"),
        click.option("--json", "as_json", is_flag=True, default=False, help="Print JSON instead of tables."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def exit_code_for(exc: BaseException) -> int:
    """The exit code of an error a command let out (see ADMIN_HELP)."""
    for classes, code in _EXIT_BY_ERROR:
        if isinstance(exc, classes):
            return code
    return EXIT_SERVER


def _command(group: click.Group, name: str, **kw):
    """``group.command(name)`` with the connection options, a Conn as first argument, and errors as exit codes."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(address, api_key, tls_ca, tls, tls_cert, tls_key, timeout, as_json, **kwargs):
            if bool(tls_cert) != bool(tls_key):
                _fail("--tls-cert and --tls-key go together (QUIVER_CLIENT_TLS_CERT / QUIVER_CLIENT_TLS_KEY)",
                      EXIT_USAGE)
            conn = Conn(address, api_key, tls_ca, tls, timeout, as_json, tls_cert, tls_key)
            try:
                return fn(conn, **kwargs)
            except E.QuiverError as e:
                msg = str(e) or type(e).__name__
                if isinstance(e, E.Unavailable) and msg.startswith(_CHANNEL_FAILURES):
                    msg = f"cannot reach the coordinator at {address}: {msg}"
                _fail(msg, exit_code_for(e))
            except OSError as e:  # a local file: --out, a snapshot
                _fail(f"{e.filename + ': ' if getattr(e, 'filename', None) else ''}{e.strerror or e}", EXIT_REFUSED)
            finally:
                conn.close()

        # the connection options after the command's own, in --help
        own = list(getattr(fn, "__click_params__", []))
        run.__click_params__ = []
        _conn_options(run)
        run.__click_params__ += own
        return group.command(name, **kw)(run)

    return wrap


#: How gRPC words an UNAVAILABLE from the channel itself (the coordinator's own messages name a node).
_CHANNEL_FAILURES = ("failed to connect", "DNS resolution failed", "Socket closed", "Connection reset",
                     "connections to all backends failing", "Broken pipe")


def _confirm(question: str, yes: bool) -> None:
    """Ask unless --yes; a refusal exits 1 with "aborted"."""
    if yes:
        return
    if not click.confirm(question, default=False, err=True):
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILED)


def _to_jsonable(obj):
    if is_dataclass(obj):
        return asdict(obj)
    if isinstance(obj, list):
        return [_to_jsonable(o) for o in obj]
    return obj


def _echo_json(obj) -> None:
    click.echo(json.dumps(_to_jsonable(obj), indent=2, sort_keys=True))


def human_bytes(n: int) -> str:
    """1536 -> "1.5 KiB"."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def format_table(headers: list[str], rows: list[list]) -> str:
    """Columns aligned to their widest cell; numbers right-aligned."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows)
               for i in range(len(headers))]

    def line(values):
        out = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in cells])


def _nodes_table(nodes: list[NodeInfo]) -> str:
    return format_table(
        ["ADDRESS", "STATE", "HEALTHY", "SHARDS", "POINTS", "RAM", "DISK", "ERROR"],
        [[n.address, n.state, "yes" if n.healthy else "no", n.shards, n.points, human_bytes(n.ram_bytes),
          human_bytes(n.disk_bytes), n.error] for n in nodes])


def _placement_table(collections: list[CollectionDetails]) -> str:
    rows = []
    for c in collections:
        for sid, replicas in c.placement().items():
            for r in replicas:
                rows.append([c.name, sid, r.node, r.state, "yes" if r.available else "no", r.points,
                             human_bytes(r.ram_bytes), human_bytes(r.disk_bytes), r.error])
    return format_table(["COLLECTION", "SHARD", "NODE", "STATE", "AVAILABLE", "POINTS", "RAM", "DISK", "ERROR"],
                        rows)


def _progress(op: Operation) -> str:
    total = op.points_total
    return f"{op.points_copied}/{total}" if total else "-"


def _operations_table(ops: list[Operation]) -> str:
    return format_table(["ID", "KIND", "STATE", "TRANSFERS", "POINTS", "DESCRIPTION", "ERROR"],
                        [[o.id, o.kind, o.state, len(o.transfers), _progress(o), o.description, o.error]
                         for o in ops])


def _operation_text(op: Operation) -> str:
    lines = [f"operation {op.id} ({op.kind}): {op.state}" + (f": {op.error}" if op.error else "")]
    if op.description:
        lines.append(op.description)
    if op.transfers:
        lines.append(format_table(
            ["COLLECTION", "SHARD", "FROM", "TO", "MOVE", "STATE", "POINTS", "ERROR"],
            [[t.collection, t.shard_id, t.from_node or "-", t.to_node, "yes" if t.move else "no", t.state,
              f"{t.points_copied}/{t.points_total}", t.error] for t in op.transfers]))
    return "\n".join(lines)


#: Quantization fields that mean something for one kind only (the others are shown for every kind).
_QUANT_FIELDS = {"quantile": "scalar", "encoding": "binary", "query_encoding": "binary", "compression": "product"}


def _collection_text(c: CollectionDetails) -> str:
    kind = c.quantization.get("kind")
    q = ", ".join(f"{k}={v}" for k, v in c.quantization.items() if _QUANT_FIELDS.get(k, kind) == kind)
    ix = ", ".join(f"{k}={v}" for k, v in c.index.items())
    lines = [
        f"collection {c.name}: {c.status}, {c.points} points",
        f"  dimension {c.dimension}, distance {c.distance}",
        f"  quantization: {q}",
        f"  index: {ix}",
        f"  shards {c.shard_number}, replication factor {c.replication_factor}, write consistency "
        f"{c.write_consistency or 'all live replicas'}",
        "",
        _placement_table([c]),
    ]
    return "\n".join(lines)


def _finish_operation(conn: Conn, op: Operation, wait: bool) -> None:
    """Print ``op`` (after waiting for it with --wait); exit 1 when it failed."""
    if wait and not op.finished:
        op = _wait(conn, op)
    if conn.as_json:
        _echo_json(op)
    else:
        click.echo(_operation_text(op))
    if op.state == "failed":
        _fail(f"operation {op.id} failed: {op.error or 'no reason given'}", EXIT_FAILED)


def _wait(conn: Conn, op: Operation) -> Operation:
    """Poll until ``op`` ends (bounded by --timeout), with a progress bar on stderr when it is a terminal."""
    if conn.as_json or not sys.stderr.isatty():
        return conn.client.wait_operation(op.id, timeout=conn.timeout)
    with click.progressbar(length=max(1, op.points_total), label=f"{op.kind} {op.id}", file=sys.stderr,
                           show_pos=True) as bar:
        def on_progress(o: Operation) -> None:
            bar.length = max(1, o.points_total, o.points_copied)
            bar.update(o.points_copied - bar.pos)

        return conn.client.wait_operation(op.id, timeout=conn.timeout, on_progress=on_progress)


_wait_option = click.option("--wait/--no-wait", default=True, show_default=True,
                            help="Wait for the operation to end (bounded by --timeout); exit 1 if it fails.")
_yes_option = click.option("--yes", "-y", is_flag=True, default=False, help="Do not ask for confirmation.")


# ------------------------------------------------------------------ commands


@click.group("admin", help=ADMIN_HELP)
def admin() -> None:
    pass


@_command(admin, "status")
def status_cmd(conn: Conn):
    """Nodes, collections with their shard placement, running operations, metadata backend."""
    st = conn.client.cluster_status()
    if conn.as_json:
        _echo_json(st)
        return
    coords = f"  (coordinators: {', '.join(st.coordinators)})" if st.coordinators else ""
    click.echo(f"metadata backend: {st.metadata_backend or '?'}{coords}")
    click.echo(f"\nnodes ({len(st.nodes)}):")
    click.echo(_nodes_table(st.nodes))
    click.echo(f"\ncollections ({len(st.collections)}):")
    if st.collections:
        click.echo(format_table(["NAME", "STATUS", "POINTS", "SHARDS", "REPLICATION", "DIM", "DISTANCE",
                                 "QUANTIZATION"],
                                [[c.name, c.status, c.points, c.shard_number, c.replication_factor, c.dimension,
                                  c.distance, c.quantization.get("kind") or "-"] for c in st.collections]))
        click.echo("\nshard placement:")
        click.echo(_placement_table(st.collections))
    click.echo(f"\nrunning operations ({len(st.operations)}):")
    if st.operations:
        click.echo(_operations_table(st.operations))


# ------------------------------------------------------------- collections


@admin.group("collections")
def collections_group() -> None:
    """Create, list, describe and drop collections (through the public API)."""


def _uint(help_: str):
    return dict(type=click.IntRange(min=0), default=None, help=help_)


@_command(collections_group, "create")
@click.argument("name")
@click.option("--dim", "dimension", type=click.IntRange(min=1), required=True, help="Vector dimension.")
@click.option("--distance", type=click.Choice(DISTANCES), default="cosine", show_default=True)
@click.option("--quantization", type=click.Choice(QUANTIZATIONS), default=None,
              help="How the in-RAM codes are made (unset = the engine's default, binary).")
@click.option("--quantile", type=click.FloatRange(0.5, 1.0), default=None,
              help="scalar: central fraction of each dimension's values covered by int8.")
@click.option("--binary-encoding", type=click.Choice(BINARY_ENCODINGS), default=None,
              help="binary: bits per dimension.")
@click.option("--query-encoding", type=click.Choice(BINARY_QUERY_ENCODINGS), default=None,
              help="binary: how the query is held when scored against the codes.")
@click.option("--compression", type=click.Choice(PRODUCT_COMPRESSIONS), default=None,
              help="product: compression relative to float32.")
@click.option("--seed", **_uint("k-means / sampling seed."))
@click.option("--full-scan-threshold", **_uint("Below this many points a shard keeps one list and scans it all."))
@click.option("--nlist", **_uint("Inverted lists once above the threshold (0 = automatic)."))
@click.option("--nprobe", **_uint("Default lists probed per query (0 = automatic)."))
@click.option("--train-sample", **_uint("Points sampled to train the quantizers."))
@click.option("--retrain-growth", type=float, default=None, help="Retrain when a shard has grown by this factor.")
@click.option("--scan-factor", **_uint("Without nprobe: probe lists until they hold scan_factor * limit * "
                                       "oversampling points."))
@click.option("--hnsw", is_flag=True, default=False,
              help="Search an HNSW graph over the codes instead of the inverted lists "
                   "(scalar or product quantization).")
@click.option("--hnsw-m", **_uint("hnsw: links per node (2m on the bottom level)."))
@click.option("--hnsw-ef-construct", **_uint("hnsw: beam width while inserting."))
@click.option("--hnsw-ef", **_uint("hnsw: default beam width of a search."))
@click.option("--shards", "shard_number", type=click.IntRange(min=0), default=0, show_default=True,
              help="Number of shards (0 = one per shard node).")
@click.option("--replication-factor", type=click.IntRange(min=0), default=0, show_default=True,
              help="Replicas per shard (0 = 1).")
@click.option("--write-consistency", type=click.IntRange(min=0), default=0, show_default=True,
              help="Replicas that must apply a write before it is acknowledged (0 = every live replica).")
def collections_create(conn: Conn, name, dimension, distance, quantization, quantile, binary_encoding,
                       query_encoding, compression, seed, full_scan_threshold, nlist, nprobe, train_sample,
                       retrain_growth, scan_factor, hnsw, hnsw_m, hnsw_ef_construct, hnsw_ef, shard_number,
                       replication_factor, write_consistency):
    """Create collection NAME; unset quantization and index options take the engine's defaults."""
    quant = {"kind": quantization, "quantile": quantile, "encoding": binary_encoding,
             "query_encoding": query_encoding, "compression": compression, "seed": seed}
    index = {"full_scan_threshold": full_scan_threshold, "nlist": nlist, "nprobe": nprobe,
             "train_sample": train_sample, "retrain_growth": retrain_growth, "scan_factor": scan_factor}
    graph = {"m": hnsw_m, "ef_construct": hnsw_ef_construct, "ef": hnsw_ef}
    if not hnsw and any(v is not None for v in graph.values()):
        raise click.UsageError("--hnsw-m, --hnsw-ef-construct and --hnsw-ef need --hnsw")
    info = conn.client.create_collection(name, dimension, distance, quantization=quant, index=index,
                                         shard_number=shard_number, replication_factor=replication_factor,
                                         write_consistency=write_consistency, hnsw=graph if hnsw else None)
    if conn.as_json:
        _echo_json(info)
    else:
        click.echo(_collection_text(info))


@_command(collections_group, "list")
def collections_list(conn: Conn):
    """The collections' names, sorted."""
    names = conn.client.list_collections()
    if conn.as_json:
        _echo_json(names)
    else:
        for n in names:
            click.echo(n)


@_command(collections_group, "describe")
@click.argument("name")
def collections_describe(conn: Conn, name):
    """Collection NAME: config, status, points and each shard's replicas."""
    info = conn.client.get_collection(name)
    if conn.as_json:
        _echo_json(info)
    else:
        click.echo(_collection_text(info))


@_command(collections_group, "drop")
@click.argument("name")
@_yes_option
def collections_drop(conn: Conn, name, yes):
    """Drop collection NAME and every point in it (asks first unless --yes)."""
    _confirm(f"Drop collection {name!r} and all its points?", yes)
    conn.client.delete_collection(name)
    if conn.as_json:
        _echo_json({"dropped": name})
    else:
        click.echo(f"dropped {name}")


# ------------------------------------------------------------------- nodes


@admin.group("nodes")
def nodes_group() -> None:
    """List, add and remove shard nodes."""


@_command(nodes_group, "list")
def nodes_list(conn: Conn):
    """Every shard node with its state, health, shards, points, RAM and disk."""
    nodes = conn.client.list_nodes()
    if conn.as_json:
        _echo_json(nodes)
    else:
        click.echo(_nodes_table(nodes))


@_command(nodes_group, "add")
@click.argument("node_address", metavar="ADDRESS")
@click.option("--allow-unreachable", is_flag=True, default=False,
              help="Add the node even if it does not answer now (e.g. not started yet).")
def nodes_add(conn: Conn, node_address, allow_unreachable):
    """Add the shard node at ADDRESS (host:port) so shards can be placed on it."""
    node = conn.client.add_node(node_address, allow_unreachable=allow_unreachable)
    if conn.as_json:
        _echo_json(node)
    else:
        click.echo(_nodes_table([node]))


@_command(nodes_group, "remove")
@click.argument("node_address", metavar="ADDRESS")
@_wait_option
def nodes_remove(conn: Conn, node_address, wait):
    """Drain the node at ADDRESS (move every replica it holds elsewhere), then forget it."""
    _finish_operation(conn, conn.client.remove_node(node_address), wait)


# ------------------------------------------------------------------ shards


@admin.group("shards")
def shards_group() -> None:
    """Move, copy and drop shard replicas; rebalance."""


@_command(shards_group, "move")
@click.argument("collection")
@click.argument("shard_id", type=click.IntRange(min=0))
@click.option("--from", "from_node", required=True, help="The node holding the replica (host:port).")
@click.option("--to", "to_node", required=True, help="The node to move it to (host:port).")
@_wait_option
def shards_move(conn: Conn, collection, shard_id, from_node, to_node, wait):
    """Move the replica of COLLECTION's shard SHARD_ID from one node to another."""
    _finish_operation(conn, conn.client.move_shard(collection, shard_id, from_node, to_node), wait)


@_command(shards_group, "replicate")
@click.argument("collection")
@click.argument("shard_id", type=click.IntRange(min=0))
@click.option("--to", "to_node", required=True, help="The node to put the new replica on (host:port).")
@click.option("--from", "from_node", default="", help="The replica to copy (default: any active one).")
@_wait_option
def shards_replicate(conn: Conn, collection, shard_id, to_node, from_node, wait):
    """Add a replica of COLLECTION's shard SHARD_ID on another node."""
    _finish_operation(conn, conn.client.replicate_shard(collection, shard_id, to_node, from_node), wait)


@_command(shards_group, "drop-replica")
@click.argument("collection")
@click.argument("shard_id", type=click.IntRange(min=0))
@click.option("--node", required=True, help="The node whose replica to drop (host:port).")
@_yes_option
def shards_drop_replica(conn: Conn, collection, shard_id, node, yes):
    """Drop the replica of COLLECTION's shard SHARD_ID on NODE (the last replica is refused)."""
    _confirm(f"Drop the replica of {collection!r} shard {shard_id} on {node}?", yes)
    conn.client.drop_replica(collection, shard_id, node)
    if conn.as_json:
        _echo_json({"collection": collection, "shard_id": shard_id, "node": node, "dropped": True})
    else:
        click.echo(f"dropped the replica of {collection} shard {shard_id} on {node}")


@_command(shards_group, "rebalance")
@click.option("--collection", default="", help="Only this collection (default: every collection).")
@_wait_option
def shards_rebalance(conn: Conn, collection, wait):
    """Move replicas so every node holds about the same number."""
    _finish_operation(conn, conn.client.rebalance(collection), wait)


# -------------------------------------------------------------- operations


@admin.group("operations")
def operations_group() -> None:
    """Long-running changes: moves, copies, rebalances, node removals."""


@_command(operations_group, "list")
def operations_list(conn: Conn):
    """Operations the coordinator knows of, with their progress."""
    ops = conn.client.list_operations()
    if conn.as_json:
        _echo_json(ops)
    else:
        click.echo(_operations_table(ops))


@_command(operations_group, "show")
@click.argument("op_id", metavar="ID")
@click.option("--wait", is_flag=True, default=False, help="Wait for it to end (bounded by --timeout).")
def operations_show(conn: Conn, op_id, wait):
    """Operation ID and each of its transfers; exits 1 if it failed."""
    _finish_operation(conn, conn.client.get_operation(op_id), wait)


# --------------------------------------------------------------- snapshots


@_command(admin, "snapshot")
@click.argument("collection")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, writable=True),
              help="The tar file to write (written to FILE.partial, then renamed).")
@click.option("--shard", "shard_id", type=click.IntRange(min=0), default=None, help="Only this shard.")
@click.option("--force", is_flag=True, default=False, help="Overwrite FILE if it exists.")
def snapshot_cmd(conn: Conn, collection, out, shard_id, force):
    """Save COLLECTION (or one shard of it) to a tar file, checking every shard's SHA-256."""
    if Path(out).exists() and not force:
        _fail(f"{out} exists; use --force to overwrite it", EXIT_REFUSED)
    manifest = conn.client.snapshot_to_file(collection, out, shard_id)
    if conn.as_json:
        _echo_json({"file": str(out), **asdict(manifest)})
        return
    total = sum(f.size for f in manifest.files)
    click.echo(f"wrote {out}: collection {manifest.collection}, {len(manifest.files)} shard(s), "
               f"{sum(f.points for f in manifest.files)} points, {human_bytes(total)}")
    click.echo(format_table(["SHARD", "FILE", "POINTS", "SIZE", "SHA256"],
                            [[f.shard_id, f.name, f.points, human_bytes(f.size), f.sha256] for f in manifest.files]))


@_command(admin, "restore")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--as", "restore_as", default="", help="Restore into this collection name (default: the original).")
def restore_cmd(conn: Conn, file, restore_as):
    """Restore a snapshot FILE: checks every checksum locally first, then sends it to the coordinator."""
    info = conn.client.restore_from_file(file, restore_as)
    if conn.as_json:
        _echo_json(info)
    else:
        click.echo(_collection_text(info))
