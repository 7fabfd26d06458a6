"""``tests/RELIABILITY.md`` is written from test runs, one section per test module.

``QUIVER_WRITE_RELIABILITY=1`` makes ``tests/test_faults.py``,
``tests/test_cluster_management.py`` and ``tests/test_bad_input.py`` each replace their own section (between
``<!-- name -->`` and ``<!-- /name -->``) and keep the others, so each file
can be run alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PATH = Path(__file__).with_name("RELIABILITY.md")
SECTIONS = ("faults", "management", "bad-input")  # in the document's order
COMMAND = ("QUIVER_WRITE_RELIABILITY=1 NUMBA_CACHE_DIR=.numba-cache .venv/bin/python -m pytest "
           "tests/test_faults.py tests/test_cluster_management.py tests/test_bad_input.py")
HEADER = [
    "# Reliability",
    "",
    f"Produced by `{COMMAND}` (do not edit by hand; each test module rewrites its own section).",
    "",
]


def enabled() -> bool:
    return os.environ.get("QUIVER_WRITE_RELIABILITY") == "1"


def cell(text: str, limit: int = 160) -> str:
    """``text`` fit for one Markdown table cell, cut in the middle past ``limit`` characters."""
    text = str(text).replace("|", "\\|").replace("\n", " ")
    half = limit // 2
    return text if len(text) <= limit else f"{text[:half]} … {text[-half:]}"


def _section(text: str, name: str) -> str | None:
    m = re.search(rf"<!-- {re.escape(name)} -->\n(.*?)\n<!-- /{re.escape(name)} -->", text, re.S)
    return m.group(1) if m else None


def write_section(name: str, lines: list[str], path: Path = PATH) -> None:
    """Replace section ``name`` of the document with ``lines``, keeping the other sections."""
    if name not in SECTIONS:
        raise ValueError(f"unknown section {name!r}")
    old = path.read_text() if path.exists() else ""
    bodies = {s: _section(old, s) for s in SECTIONS}
    bodies[name] = "\n".join(lines).rstrip("\n")
    out = list(HEADER)
    for s in SECTIONS:
        if bodies[s] is not None:
            out += [f"<!-- {s} -->", bodies[s], f"<!-- /{s} -->", ""]
    path.write_text("\n".join(out))
