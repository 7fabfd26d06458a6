"""Start and stop a real single-member etcd on loopback, for tests of the etcd metadata backend.

    handle = start_etcd(tmp_dir)      # raises EtcdUnavailable if there is no etcd binary
    handle.endpoint                   # "127.0.0.1:PORT", for EtcdBackend
    handle.stop()

The binary comes from ``scripts/ensure-etcd`` (``./run test`` calls it). Client
and peer URLs both listen on 127.0.0.1 on free ports; the data dir is under
``tmp_dir``, so a restarted etcd (``start_etcd`` on the same dir) keeps its data.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: How long etcd may take to answer after it starts (it usually needs < 1 s).
START_TIMEOUT = 20.0


class EtcdUnavailable(RuntimeError):
    """No etcd binary on PATH (run scripts/ensure-etcd)."""


def etcd_binary() -> str | None:
    return os.environ.get("QUIVER_ETCD_BIN") or shutil.which("etcd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EtcdHandle:
    endpoint: str
    data_dir: Path
    log_file: Path
    proc: subprocess.Popen
    client_port: int
    peer_port: int

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate etcd (SIGTERM, then SIGKILL after ``timeout``) and wait for it."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _answers(endpoint: str, timeout: float, credentials=None) -> bool:
    """True once etcd serves a linearizable Range (i.e. it has a leader)."""
    import grpc

    from quiver.etcd import rpc_pb2, rpc_pb2_grpc

    with (grpc.insecure_channel(endpoint) if credentials is None
          else grpc.secure_channel(endpoint, credentials)) as channel:
        try:
            rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"\0"), timeout=timeout)
            return True
        except grpc.RpcError:
            return False


def start_etcd(tmp_dir: str | os.PathLike, name: str = "quiver-test", timeout: float = START_TIMEOUT,
               client_port: int | None = None, peer_port: int | None = None,
               tls: tuple[Path, Path, Path | None] | None = None, probe_credentials=None) -> EtcdHandle:
    """Start etcd with its data under ``tmp_dir`` and wait (at most ``timeout`` s) until it answers.

    Ports default to free ones; to restart a stopped etcd with its data and
    endpoint, pass the same ``tmp_dir`` and ``name`` and the ports of the old
    handle (``handle.client_port``, ``handle.peer_port``). ``tls``: (certificate,
    key, client CA or None) PEM files: clients over TLS only, and with a client
    CA only those presenting a certificate it issued (``--client-cert-auth``);
    ``probe_credentials``: the gRPC channel credentials to ask it with then."""
    binary = etcd_binary()
    if not binary:
        raise EtcdUnavailable("no `etcd` binary on PATH: run scripts/ensure-etcd (./run test does)")
    root = Path(tmp_dir)
    root.mkdir(parents=True, exist_ok=True)
    data_dir, log_file = root / f"{name}.etcd", root / f"{name}.log"
    client_port, peer_port = client_port or _free_port(), peer_port or _free_port()
    client_url = f"{'https' if tls else 'http'}://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    args = [
        binary,
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"{name}={peer_url}",
        "--initial-cluster-state", "new",
        "--log-outputs", "stderr",
    ]
    if tls:
        cert, key, client_ca = tls
        args += ["--cert-file", str(cert), "--key-file", str(key)]
        if client_ca is not None:
            args += ["--trusted-ca-file", str(client_ca), "--client-cert-auth"]
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    handle = EtcdHandle(f"127.0.0.1:{client_port}", data_dir, log_file, proc, client_port, peer_port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"etcd exited with code {proc.returncode} on start; log:\n{handle.log_tail()}")
        if _answers(handle.endpoint, timeout=1.0, credentials=probe_credentials):
            return handle
        time.sleep(0.1)
    handle.stop()
    raise RuntimeError(f"etcd did not answer on {handle.endpoint} within {timeout:.0f} s; log:\n{handle.log_tail()}")
