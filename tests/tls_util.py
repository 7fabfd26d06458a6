"""Self-signed certificates for tests, made with the ``openssl`` command."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def self_signed(d: Path, names: str = "DNS:localhost,IP:127.0.0.1") -> tuple[Path, Path]:
    """(tls.crt, tls.key) in d: an EC certificate valid for a day for the subject
    alternative names ``names``; it is its own CA. Skips the test without openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = d / "tls.crt", d / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=quiver",
                    "-addext", f"subjectAltName={names}"], check=True, capture_output=True, timeout=30)
    return cert, key
