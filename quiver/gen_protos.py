"""Generate the Python code for ``protos/quiver/v1/*.proto`` into ``quiver/v1/``.

    python -m quiver.gen_protos            # regenerate in place
    python -m quiver.gen_protos --check    # exit 1 if the committed code is stale
    python -m quiver.gen_protos --out DIR  # write DIR/quiver/v1/... instead

The generated files are committed and never edited by hand;
``tests/test_protos.py`` regenerates into a temporary directory and fails when
the committed files differ.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = Path("quiver") / "v1"
INIT_TEXT = '"""Generated gRPC/protobuf code for quiver.v1. Do not edit: run `python -m quiver.gen_protos`."""\n'


def proto_files() -> list[Path]:
    """The .proto sources, relative to ``protos/``, in a stable order."""
    return sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) on every proto; return the files written under ``out``."""
    from grpc_tools import protoc

    out = Path(out)
    (out / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    include = str(resources.files("grpc_tools") / "_proto")
    files = [str(p) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}: {' '.join(args)}")
    (out / PACKAGE_DIR / "__init__.py").write_text(INIT_TEXT)
    return sorted(p for p in (out / PACKAGE_DIR).iterdir() if p.suffix in (".py", ".pyi"))


def stale_files() -> list[str]:
    """Names of generated files that differ from a fresh generation (or are missing or extra)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / PACKAGE_DIR
        generate(Path(tmp))
        committed = ROOT / PACKAGE_DIR
        names = {p.name for d in (fresh, committed) if d.exists() for p in d.iterdir() if p.suffix in (".py", ".pyi")}
        return sorted(n for n in names if not (fresh / n).exists() or not (committed / n).exists()
                      or (fresh / n).read_bytes() != (committed / n).read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the repository)")
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    ns = parser.parse_args(argv)
    if ns.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: {PACKAGE_DIR / name}")
        return 1 if stale else 0
    for path in generate(ns.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
