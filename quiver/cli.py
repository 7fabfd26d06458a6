"""The quiver command: run a node, run a local cluster, or try the demo.

    quiver demo                          # local cluster + sample data + recall/latency table
    quiver local start|stop|status       # a local cluster (coordinator + 2 shard nodes) in ./.quiver
    quiver coordinator --listen 0.0.0.0:6334 --data-dir /data --shard-nodes a:6335,b:6335
    quiver shard-node  --listen 0.0.0.0:6335 --data-dir /data

Every node flag also reads an environment variable (QUIVER_LISTEN,
QUIVER_DATA_DIR, QUIVER_SHARD_NODES, QUIVER_METRICS_PORT, ...), which is what
the Kubernetes manifests set.
"""

from __future__ import annotations

import quiver.blas_threads  # noqa: F401 - before numpy loads OpenBLAS
import quiver.grpc_engine  # noqa: F401 - before grpc starts

import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402
import numpy as np  # noqa: E402

from quiver.serving import DEFAULT_MAX_MESSAGE_MB


def _node_options(default_listen: str):
    def wrap(fn):
        opts = [
            click.option("--listen", envvar="QUIVER_LISTEN", default=default_listen, show_default=True,
                         help="host:port to serve gRPC on (port 0 = any free port). [env QUIVER_LISTEN]"),
            click.option("--data-dir", envvar="QUIVER_DATA_DIR", required=True, type=click.Path(file_okay=False),
                         help="Where this node keeps its LMDB files. [env QUIVER_DATA_DIR]"),
            click.option("--metrics-port", envvar="QUIVER_METRICS_PORT", type=int, default=None,
                         help="Serve Prometheus /metrics on this port (0 = any free port; unset = off). "
                              "[env QUIVER_METRICS_PORT]"),
            click.option("--port-file", envvar="QUIVER_PORT_FILE", default=None,
                         help="Write {pid, port, metrics_port} as JSON here once listening. [env QUIVER_PORT_FILE]"),
            click.option("--grace", envvar="QUIVER_SHUTDOWN_GRACE", type=float, default=10.0, show_default=True,
                         help="Seconds in-flight calls get to finish after SIGTERM. [env QUIVER_SHUTDOWN_GRACE]"),
            click.option("--max-message-mb", envvar="QUIVER_MAX_MESSAGE_MB", type=int,
                         default=DEFAULT_MAX_MESSAGE_MB, show_default=True,
                         help="Largest gRPC message sent or received. [env QUIVER_MAX_MESSAGE_MB]"),
            click.option("--log-level", envvar="QUIVER_LOG_LEVEL", default="info", show_default=True,
                         type=click.Choice(["debug", "info", "warning", "error"]),
                         help="[env QUIVER_LOG_LEVEL]"),
        ]
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return wrap


def _security_load(fn, *args, **kw):
    """Call a ``quiver.security`` loader; a bad key file or secret is a usage error (never echoing a key)."""
    from quiver.security import SecurityConfigError

    try:
        return fn(*args, **kw)
    except SecurityConfigError as e:
        raise click.UsageError(str(e)) from None


def _cluster_secret_options(fn):
    opts = [
        click.option("--cluster-secret-file", envvar="QUIVER_CLUSTER_SECRET_FILE", default=None,
                     type=click.Path(dir_okay=False),
                     help="File holding the secret the coordinator sends to shard nodes and shard nodes require "
                          "(same file on both; unset = no check). [env QUIVER_CLUSTER_SECRET_FILE]"),
        click.option("--cluster-secret", envvar="QUIVER_CLUSTER_SECRET", default=None, hidden=True,
                     help="The cluster secret itself; set it through the environment, not the command line. "
                          "[env QUIVER_CLUSTER_SECRET]"),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _tls_server_options(what: str, client: str):
    def wrap(fn):
        opts = [
            click.option("--tls-cert", envvar="QUIVER_TLS_CERT", default=None, type=click.Path(dir_okay=False),
                         help=f"PEM certificate (chain): serve {what} over TLS. [env QUIVER_TLS_CERT]"),
            click.option("--tls-key", envvar="QUIVER_TLS_KEY", default=None, type=click.Path(dir_okay=False),
                         help="PEM private key of --tls-cert. [env QUIVER_TLS_KEY]"),
            click.option("--tls-client-ca", envvar="QUIVER_TLS_CLIENT_CA", default=None,
                         type=click.Path(dir_okay=False),
                         help="PEM CA certificate(s): mutual TLS, serve only callers presenting a certificate "
                              f"these issued ({client}). Needs --tls-cert. [env QUIVER_TLS_CLIENT_CA]"),
            click.option("--health-port", envvar="QUIVER_HEALTH_PORT", type=int, default=None,
                         help="Also serve grpc.health.v1 alone, in plaintext, on this port (0 = any free port; "
                              "unset = off): for probes that cannot speak TLS, such as the kubelet's gRPC probes. "
                              "[env QUIVER_HEALTH_PORT]"),
        ]
        for opt in reversed(opts):
            fn = opt(fn)
        return fn
    return wrap


def _tls_credentials(tls_cert, tls_key, tls_client_ca=None):
    from quiver import security

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together (QUIVER_TLS_CERT / QUIVER_TLS_KEY)")
    if tls_client_ca and not tls_cert:
        raise click.UsageError("--tls-client-ca needs --tls-cert and --tls-key (QUIVER_TLS_CERT / QUIVER_TLS_KEY)")
    if not tls_cert:
        return None
    client_ca = _security_load(security.ca_certificates, tls_client_ca) if tls_client_ca else None
    return _security_load(security.server_credentials, tls_cert, tls_key, client_ca)


def _client_tls_options(name: str, ca_help: str, cert_help: str):
    """--<name>-tls-ca, -cert and -key (env QUIVER_<NAME>_TLS_*): TLS for the coordinator's calls out."""
    env = f"QUIVER_{name.upper()}_TLS"

    def wrap(fn):
        opts = [
            click.option(f"--{name}-tls-ca", envvar=f"{env}_CA", default=None, type=click.Path(dir_okay=False),
                         help=f"PEM CA certificate(s): {ca_help}. Unset = plaintext. [env {env}_CA]"),
            click.option(f"--{name}-tls-cert", envvar=f"{env}_CERT", default=None, type=click.Path(dir_okay=False),
                         help=f"PEM certificate (chain) {cert_help}. Needs --{name}-tls-ca. [env {env}_CERT]"),
            click.option(f"--{name}-tls-key", envvar=f"{env}_KEY", default=None, type=click.Path(dir_okay=False),
                         help=f"PEM private key of --{name}-tls-cert. [env {env}_KEY]"),
        ]
        for opt in reversed(opts):
            fn = opt(fn)
        return fn
    return wrap


def _client_tls_files(name: str, ca, cert, key) -> tuple[bytes | None, tuple[bytes, bytes] | None]:
    """(CA PEM or None, (certificate, key) PEM or None) from --<name>-tls-ca/-cert/-key."""
    from quiver import security

    flag, env = f"--{name}-tls", f"QUIVER_{name.upper()}_TLS"
    if bool(cert) != bool(key):
        raise click.UsageError(f"{flag}-cert and {flag}-key go together ({env}_CERT / {env}_KEY)")
    if cert and not ca:
        raise click.UsageError(f"{flag}-cert needs {flag}-ca ({env}_CA)")
    return (_security_load(security.ca_certificates, ca) if ca else None,
            _security_load(security.certificate_pair, cert, key) if cert else None)


@click.group(help=__doc__.split("\n\n")[0])
def main() -> None:
    pass


@main.command("shard-node")
@_node_options("0.0.0.0:6335")
@click.option("--workers", envvar="QUIVER_WORKERS", type=int, default=16, show_default=True,
              help="gRPC handler threads; searches run in them, in parallel. Each coordinator's search "
                   "streams hold 2 of them (coordinator/search_stream.py). [env QUIVER_WORKERS]")
@_tls_server_options("the shard node's API", "the coordinator's --shard-tls-cert")
@_cluster_secret_options
def shard_node_cmd(listen, data_dir, metrics_port, port_file, grace, max_message_mb, log_level, workers,
                   tls_cert, tls_key, health_port, tls_client_ca, cluster_secret_file, cluster_secret):
    """Run a shard node: hosts collection shards, each an engine with its own LMDB."""
    from quiver import security
    from quiver.logs import setup_logging
    from shard.server import serve

    secret = _security_load(security.load_cluster_secret, cluster_secret_file, cluster_secret)
    tls = _tls_credentials(tls_cert, tls_key, tls_client_ca)
    setup_logging(log_level, role="shard-node")
    serve(listen, data_dir, metrics_port=metrics_port, port_file=port_file, grace=grace,
          max_message_mb=max_message_mb, workers=workers, cluster_secret=secret, tls=tls, health_port=health_port)


@main.command("coordinator")
@_node_options("0.0.0.0:6334")
@click.option("--shard-nodes", envvar="QUIVER_SHARD_NODES", default="",
              help="Comma-separated host:port of shard nodes to register at start (if not registered yet); "
                   "more are added with `quiver admin nodes add`. [env QUIVER_SHARD_NODES]")
@click.option("--etcd-endpoints", envvar="QUIVER_ETCD_ENDPOINTS", default="",
              help="Comma-separated host:port of etcd servers: keep the metadata there, shared by every "
                   "coordinator using the same endpoints and prefix. Unset = this coordinator's own LMDB under "
                   "--data-dir (one coordinator). [env QUIVER_ETCD_ENDPOINTS]")
@click.option("--etcd-prefix", envvar="QUIVER_ETCD_PREFIX", default="/quiver/", show_default=True,
              help="Key prefix of this cluster's metadata in etcd. [env QUIVER_ETCD_PREFIX]")
@_client_tls_options("etcd", "call etcd over TLS (endpoints host:port or https://) and verify its "
                             "certificate against these", "shown to etcd, for an etcd with --client-cert-auth")
@click.option("--hedge-after", envvar="QUIVER_HEDGE_AFTER", type=float, default=None,
              help="Seconds after which a read also asks a shard's next replica (a hedged read; unset = off). "
                   "[env QUIVER_HEDGE_AFTER]")
@click.option("--repair-interval", envvar="QUIVER_REPAIR_INTERVAL", type=float, default=1.0, show_default=True,
              help="Seconds between checks for dead replicas to catch up. [env QUIVER_REPAIR_INTERVAL]")
@click.option("--shard-timeout", envvar="QUIVER_SHARD_TIMEOUT", type=float, default=10.0, show_default=True,
              help="Deadline of each read call to a shard, in seconds (a client's shorter deadline wins). "
                   "[env QUIVER_SHARD_TIMEOUT]")
@click.option("--shard-write-timeout", envvar="QUIVER_SHARD_WRITE_TIMEOUT", type=float, default=300.0,
              show_default=True, help="Deadline of each write or shard create/drop, in seconds (a write may "
                                      "retrain the shard's index). [env QUIVER_SHARD_WRITE_TIMEOUT]")
@click.option("--api-keys-file", envvar="QUIVER_API_KEYS_FILE", default=None, type=click.Path(dir_okay=False),
              help="API keys and their roles: `<key> <role>` per line (role admin or read), or JSON "
                   "{\"keys\": [{\"key\": ..., \"role\": ...}]}. Unset (and no QUIVER_API_KEY_*) = no "
                   "authentication. [env QUIVER_API_KEYS_FILE]")
@click.option("--api-key-admin", envvar="QUIVER_API_KEY_ADMIN", default=None, hidden=True,
              help="Admin key(s), comma-separated; set through the environment. [env QUIVER_API_KEY_ADMIN]")
@click.option("--api-key-read", envvar="QUIVER_API_KEY_READ", default=None, hidden=True,
              help="Read-only key(s), comma-separated; set through the environment. [env QUIVER_API_KEY_READ]")
@_tls_server_options("the public and admin APIs", "clients' tls_cert, `quiver admin --tls-cert`")
@_client_tls_options("shard", "call the shard nodes over TLS (they serve it with --tls-cert) and verify "
                              "their certificates against these",
                     "this coordinator presents to the shard nodes (mutual TLS: nodes started with "
                     "--tls-client-ca)")
@click.option("--shard-tls-server-name", envvar="QUIVER_SHARD_TLS_SERVER_NAME", default=None,
              help="The name every shard node's certificate is checked for, instead of the host it is reached "
                   "by (one certificate for all nodes). [env QUIVER_SHARD_TLS_SERVER_NAME]")
@_cluster_secret_options
def coordinator_cmd(listen, data_dir, metrics_port, port_file, grace, max_message_mb, log_level, shard_nodes,
                    shard_timeout, shard_write_timeout, api_keys_file, api_key_admin, api_key_read, tls_cert,
                    tls_key, tls_client_ca, health_port, shard_tls_ca, shard_tls_server_name, shard_tls_cert, shard_tls_key,
                    cluster_secret_file, cluster_secret, etcd_endpoints, etcd_prefix, etcd_tls_ca, etcd_tls_cert,
                    etcd_tls_key, hedge_after, repair_interval):
    """Run the coordinator: the public and admin APIs, placement, fan-out and global merge."""
    from coordinator.server import serve
    from quiver import security
    from quiver.logs import setup_logging

    keys = _security_load(security.load_api_keys, api_keys_file, admin=api_key_admin, read=api_key_read)
    secret = _security_load(security.load_cluster_secret, cluster_secret_file, cluster_secret)
    tls = _tls_credentials(tls_cert, tls_key, tls_client_ca)
    if shard_tls_server_name and not shard_tls_ca:
        raise click.UsageError("--shard-tls-server-name needs --shard-tls-ca (QUIVER_SHARD_TLS_CA)")
    shard_ca, shard_identity = _client_tls_files("shard", shard_tls_ca, shard_tls_cert, shard_tls_key)
    etcd_ca, etcd_identity = _client_tls_files("etcd", etcd_tls_ca, etcd_tls_cert, etcd_tls_key)
    etcd_tls = None if etcd_ca is None else security.channel_credentials(etcd_ca, etcd_identity)
    setup_logging(log_level, role="coordinator")
    serve(listen, data_dir, [n for n in shard_nodes.split(",") if n.strip()], shard_timeout=shard_timeout,
          write_timeout=shard_write_timeout, metrics_port=metrics_port, port_file=port_file, grace=grace,
          max_message_mb=max_message_mb, api_keys=keys, tls=tls, cluster_secret=secret, health_port=health_port,
          etcd_endpoints=[e.strip() for e in etcd_endpoints.split(",") if e.strip()], etcd_prefix=etcd_prefix,
          hedge_after=hedge_after, repair_interval=repair_interval, shard_tls_ca=shard_ca,
          shard_tls_server_name=shard_tls_server_name, shard_tls_identity=shard_identity, etcd_credentials=etcd_tls)


_dir_option = click.option("--dir", "root", envvar="QUIVER_LOCAL_DIR", default=".quiver", show_default=True,
                           type=click.Path(file_okay=False), help="Folder of the local cluster. [env QUIVER_LOCAL_DIR]")


@main.group("local")
def local() -> None:
    """A local cluster: one coordinator and shard nodes as background processes."""


@local.command("start")
@_dir_option
@click.option("--nodes", default=2, show_default=True, help="Number of shard nodes.")
def local_start(root, nodes):
    """Start the local cluster (or find it running) and print the coordinator's address."""
    from quiver.local import LocalCluster

    click.echo(LocalCluster(Path(root), nodes).start())


@local.command("stop")
@_dir_option
def local_stop(root):
    """Stop the local cluster gracefully (SIGTERM, drain, close LMDB)."""
    from quiver.local import LocalCluster

    click.echo("stopped" if LocalCluster(Path(root)).stop() else "not running")


@local.command("status")
@_dir_option
def local_status(root):
    """Print the local cluster's processes and the coordinator's address."""
    from quiver.local import LocalCluster

    st = LocalCluster(Path(root)).status()
    click.echo(json.dumps(st, indent=2))
    if not st["running"]:
        raise SystemExit(1)


@main.command("demo")
@_dir_option
@click.option("--full", "dataset", flag_value="../shared/datasets/docs384", default=None,
              help="Use the full docs384 dataset (100k points) from ../shared/datasets instead of the sample.")
@click.option("--dataset", "dataset", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of a docs384-style dataset to load instead of the sample.")
@click.option("--quantization", default="binary", show_default=True,
              type=click.Choice(["binary", "scalar", "product", "none"]))
@click.option("--oversampling", default="1,3", show_default=True, help="Comma-separated factors to try.")
@click.option("--keep/--no-keep", default=False, help="Leave the cluster running afterwards.")
def demo(root, dataset, quantization, oversampling, keep):
    """Start a local cluster, load sample data, and report recall@10, latency and originals read."""
    from quiver.client import Client
    from quiver.local import LocalCluster
    from quiver.sample import load_docs384, load_sample

    data = load_docs384(dataset) if dataset else load_sample()
    cluster = LocalCluster(Path(root), 2)
    was_running = cluster.running()
    click.echo(f"starting a local cluster in {cluster.root} (coordinator + 2 shard nodes) ...")
    address = cluster.start()
    click.echo(f"coordinator at {address}")
    try:
        with Client(address) as c:
            if "demo" in c.list_collections():
                c.delete_collection("demo")
            c.create_collection("demo", dimension=data.base.shape[1], distance="cosine",
                                quantization=quantization, shard_number=2)
            t0 = time.perf_counter()
            c.upsert_many("demo", np.arange(len(data.base), dtype=np.uint64), data.base,
                          [{"row": i} for i in range(len(data.base))], progress=True)
            dt = time.perf_counter() - t0
            click.echo(f"loaded {c.count('demo')} points in {dt:.1f}s ({len(data.base) / dt:,.0f} points/s)")
            c.search("demo", data.queries[0], limit=10)  # warm-up (first use compiles kernels)
            rows = []
            for os_ in [float(x) for x in oversampling.split(",")]:
                for rescore in (False, True):
                    rows.append(_run_queries(c, data, os_, rescore))
            click.echo(f"\n{'oversampling':>12} {'rescore':>8} {'recall@10':>10} {'p50 ms':>8} {'p99 ms':>8} "
                       f"{'originals/query':>16}")
            for r in rows:
                click.echo(f"{r['oversampling']:>12g} {str(r['rescore']):>8} {r['recall']:>10.3f} "
                           f"{r['p50']:>8.2f} {r['p99']:>8.2f} {r['originals']:>16.1f}")
    finally:
        if not keep and not was_running:
            cluster.stop()
            click.echo("cluster stopped")
        elif keep:
            click.echo(f"cluster left running at {address}; stop it with `quiver local stop --dir {root}`")


def _run_queries(c, data, oversampling: float, rescore: bool) -> dict:
    before = c.get_collection("demo").originals_read
    lat, found = [], []
    for q in data.queries:
        t = time.perf_counter()
        hits = c.search("demo", q, limit=10, oversampling=oversampling, rescore=rescore)
        lat.append(time.perf_counter() - t)
        found.append(hits.ids.astype(np.int64))
    after = c.get_collection("demo").originals_read
    k = 10
    recall = float(np.mean([len(set(f[:k].tolist()) & set(g[:k].tolist())) / k for f, g in zip(found, data.gt)]))
    lat_ms = np.array(lat) * 1e3
    return {"oversampling": oversampling, "rescore": rescore, "recall": recall,
            "p50": float(np.percentile(lat_ms, 50)), "p99": float(np.percentile(lat_ms, 99)),
            "originals": (after - before) / len(data.queries)}


from quiver.admin_cli import admin  # noqa: E402

main.add_command(admin)

if __name__ == "__main__":
    main()
