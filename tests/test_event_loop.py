"""The coordinator process runs its event loop on uvloop (a dependency) unless told not to."""

from __future__ import annotations

import json

import pytest

from quiver.client import Client
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
