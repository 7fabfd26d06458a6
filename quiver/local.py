"""Start and stop a local cluster: one coordinator and N shard nodes, each its own process.

Everything lives under one folder (default ``./.quiver``):

    .quiver/cluster.json      pids, ports and addresses of the running cluster
    .quiver/ports.json        the ports chosen on first start, reused on every
                              start (the coordinator's placement names nodes
                              by address, so addresses must not change)
    .quiver/coordinator/      the coordinator's metadata (LMDB)
    .quiver/node-<i>/         shard node i's shards (LMDB per shard)
    .quiver/logs/*.log        JSON-lines logs of each process
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1", preferred: int | None = None) -> int:
    """A port that is free now (``preferred`` if it is)."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def child_env() -> dict[str, str]:
    """Environment for child processes: this checkout importable even when not installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def spawn(role: str, args: list[str], port_file: Path, log_file: Path | None = None,
          detach: bool = False) -> subprocess.Popen:
    """Start ``python -m quiver.cli <role> <args> --port-file <port_file>``."""
    port_file = Path(port_file)
    port_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "quiver.cli", role, *args, "--port-file", str(port_file)]
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=child_env(),
                                cwd=str(REPO_ROOT), start_new_session=detach)
    finally:
        if log_file:
            out.close()


def wait_port_file(port_file: Path, proc: subprocess.Popen | None = None, timeout: float = 60.0,
                   log_file: Path | None = None) -> dict:
    """Wait until the process wrote its port file; fail early if it died."""
    deadline = time.monotonic() + timeout
    port_file = Path(port_file)
    while time.monotonic() < deadline:
        if port_file.exists():
            return json.loads(port_file.read_text())
        if proc is not None and proc.poll() is not None:
            tail = log_file.read_text()[-2000:] if log_file and log_file.exists() else ""
            raise RuntimeError(f"{' '.join(proc.args)} exited with {proc.returncode}\n{tail}")
        time.sleep(0.05)
    raise TimeoutError(f"no port file {port_file} after {timeout:g}s")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie or a reused pid is not ours
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return b"quiver.cli" in cmdline
    except OSError:
        return True


def terminate(pids: list[int], timeout: float = 30.0) -> None:
    """SIGTERM each process (graceful: drain, close LMDB), SIGKILL what is left after ``timeout``."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        for p in pids:  # reap our own children
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@dataclass
class LocalCluster:
    root: Path = Path(".quiver")
    nodes: int = 2
    host: str = "127.0.0.1"

    def __post_init__(self):
        self.root = Path(self.root).resolve()

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    def state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        st = self.state()
        return bool(st) and all(alive(p["pid"]) for p in [st["coordinator"], *st["nodes"]])

    @property
    def address(self) -> str:
        st = self.state()
        if not st:
            raise RuntimeError(f"no local cluster in {self.root}")
        return st["coordinator"]["address"]

    def _ports(self) -> dict:
        path = self.root / "ports.json"
        try:
            ports = json.loads(path.read_text())
            if len(ports["nodes"]) == self.nodes:
                return ports
        except (OSError, ValueError, KeyError):
            pass
        ports = {"coordinator": free_port(self.host, 6334), "nodes": []}
        for i in range(self.nodes):
            p = free_port(self.host)
            while p == ports["coordinator"] or p in ports["nodes"]:
                p = free_port(self.host)
            ports["nodes"].append(p)
        path.write_text(json.dumps(ports))
        return ports

    def start(self, timeout: float = 120.0) -> str:
        """Start the cluster (or find it running); returns the coordinator's address."""
        if self.running():
            return self.address
        self.stop()  # leftovers of a half-dead cluster
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        ports = self._ports()
        procs, nodes = [], []
        try:
            for i, port in enumerate(ports["nodes"]):
                log = self.root / "logs" / f"node-{i}.log"
                pf = self.root / f"node-{i}.port"
                p = spawn("shard-node", ["--listen", f"{self.host}:{port}", "--data-dir",
                                         str(self.root / f"node-{i}"), "--metrics-port", "0"], pf, log, detach=True)
                procs.append((p, pf, log))
            for p, pf, log in procs:
                info = wait_port_file(pf, p, timeout, log)
                nodes.append({"pid": p.pid, "address": f"{self.host}:{info['port']}",
                              "metrics_port": info["metrics_port"], "log": str(log)})
            log = self.root / "logs" / "coordinator.log"
            pf = self.root / "coordinator.port"
            p = spawn("coordinator", ["--listen", f"{self.host}:{ports['coordinator']}", "--data-dir",
                                      str(self.root / "coordinator"), "--metrics-port", "0", "--shard-nodes",
                                      ",".join(n["address"] for n in nodes)], pf, log, detach=True)
            procs.append((p, pf, log))
            info = wait_port_file(pf, p, timeout, log)
        except Exception:
            terminate([p.pid for p, _, _ in procs], timeout=5)
            raise
        coord = {"pid": p.pid, "address": f"{self.host}:{info['port']}", "metrics_port": info["metrics_port"],
                 "log": str(log)}
        self.state_file.write_text(json.dumps({"coordinator": coord, "nodes": nodes}, indent=2))
        return coord["address"]

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop every process of the cluster gracefully; False if none was running."""
        st = self.state()
        if not st:
            return False
        pids = [st["coordinator"]["pid"], *(n["pid"] for n in st["nodes"])]
        was = any(alive(p) for p in pids)
        terminate(pids, timeout)
        self.state_file.unlink(missing_ok=True)
        return was

    def status(self) -> dict:
        st = self.state() or {}
        out = {"root": str(self.root), "running": self.running()}
        for key in ("coordinator",):
            if key in st:
                out[key] = {**st[key], "alive": alive(st[key]["pid"])}
        out["nodes"] = [{**n, "alive": alive(n["pid"])} for n in st.get("nodes", [])]
        return out
