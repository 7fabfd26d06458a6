"""`quiver local start|status|stop`: a whole cluster as processes, stopped gracefully and
started again on the same folder with every collection and point intact."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from quiver.client import Client
from quiver.local import REPO_ROOT, alive, child_env


def quiver(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "quiver.cli", *map(str, args)], capture_output=True, text=True,
                       env=child_env(), cwd=REPO_ROOT, timeout=180)
    if check and r.returncode:
        raise AssertionError(f"quiver {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def test_local_cluster_survives_a_graceful_restart(tmp_path):
    root = tmp_path / "q"
    address = quiver("local", "start", "--dir", root).stdout.strip().splitlines()[-1]
    assert address.startswith("127.0.0.1:")
    try:
        status = json.loads(quiver("local", "status", "--dir", root).stdout)
        assert status["running"] and len(status["nodes"]) == 2 and status["coordinator"]["address"] == address
        rng = np.random.default_rng(0)
        x = rng.standard_normal((500, 24)).astype(np.float32)
        with Client(address, timeout=120) as c:
            c.create_collection("kept", 24, "dot", quantization="scalar", shard_number=2)
            c.upsert_many("kept", np.arange(500, dtype=np.uint64), x, [{"i": i} for i in range(500)])
            before = c.search("kept", x[7], limit=5, oversampling=2.0, with_payload=True)
        pids = [status["coordinator"]["pid"]] + [n["pid"] for n in status["nodes"]]

        assert quiver("local", "stop", "--dir", root).stdout.strip() == "stopped"
        assert not any(alive(p) for p in pids)
        assert quiver("local", "status", "--dir", root, check=False).returncode == 1
        for log in (root / "logs").glob("*.log"):  # JSON lines, ending with a graceful stop
            records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
            assert any(r["msg"] == "stopping" and r["signal"] == "SIGTERM" for r in records), log
            assert records[-1]["msg"] == "stopped", log

        assert quiver("local", "start", "--dir", root).stdout.strip().splitlines()[-1] == address
        with Client(address, timeout=120) as c:
            assert c.list_collections() == ["kept"]
            assert c.count("kept") == 500
            after = c.search("kept", x[7], limit=5, oversampling=2.0, with_payload=True)
            assert after.ids.tolist() == before.ids.tolist() and after.payloads == before.payloads
            np.testing.assert_allclose(after.scores, before.scores, rtol=1e-6)
    finally:
        quiver("local", "stop", "--dir", root, check=False)
