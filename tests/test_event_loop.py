"""The coordinator process runs its event loop on uvloop (a dependency) unless told not to,
and server processes start gRPC with quiver's experiments unless the operator set their own."""

from __future__ import annotations

import json

import pytest

from quiver.client import Client
from quiver.grpc_engine import SERVER_EXPERIMENTS
from quiver.local import spawn, terminate, wait_port_file


@pytest.mark.parametrize("choice, expected", [(None, "uvloop"), ("asyncio", "asyncio")])
def test_coordinator_event_loop(tmp_path, monkeypatch, choice, expected):
    if choice is not None:
        monkeypatch.setenv("QUIVER_EVENT_LOOP", choice)
    pf, log = tmp_path / "c.port", tmp_path / "c.log"
    p = spawn("coordinator", ["--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "c"), "--metrics-port", "0",
                              "--log-level", "info"], pf, log)
    try:
        info = wait_port_file(pf, p, timeout=60, log_file=log)
        with Client(f"127.0.0.1:{info['port']}", timeout=30) as c:
            assert c.list_collections() == []
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        listening = [entry for entry in lines if entry.get("msg") == "coordinator listening"]
        assert listening and listening[0]["event_loop"].split(".")[0] == expected
    finally:
        terminate([p.pid], timeout=10)


@pytest.mark.parametrize("role", ["coordinator", "shard-node"])
@pytest.mark.parametrize("operator", [None, "-event_engine_listener"])
def test_servers_start_grpc_with_quiver_experiments_unless_set(tmp_path, monkeypatch, role, operator):
    monkeypatch.delenv("GRPC_EXPERIMENTS", raising=False)  # as on a fresh machine
    if operator is not None:
        monkeypatch.setenv("GRPC_EXPERIMENTS", operator)
    pf, log = tmp_path / "n.port", tmp_path / "n.log"
    p = spawn(role, ["--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "n"), "--log-level", "info"], pf, log)
    try:
        info = wait_port_file(pf, p, timeout=60, log_file=log)
        if role == "coordinator":  # and it serves with them
            with Client(f"127.0.0.1:{info['port']}", timeout=30) as c:
                assert c.list_collections() == []
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        listening = [entry for entry in lines if entry.get("msg", "").endswith("listening")]
        assert listening and listening[0]["grpc_experiments"] == (operator or SERVER_EXPERIMENTS)
    finally:
        terminate([p.pid], timeout=10)
