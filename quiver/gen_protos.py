"""Generate the Python code for every ``protos/quiver/**/*.proto`` into ``quiver/``.

    python -m quiver.gen_protos            # regenerate in place
    python -m quiver.gen_protos --check    # exit 1 if the committed code is stale
    python -m quiver.gen_protos --out DIR  # write DIR/quiver/... instead

Each folder of protos becomes the package of the same path:
``protos/quiver/v1/*.proto`` (Quiver's own API) -> ``quiver/v1/``, and
``protos/quiver/etcd/rpc.proto`` (the subset of etcd's v3 API the coordinator
speaks) -> ``quiver/etcd/``. The generated files are committed and never
edited by hand; ``tests/test_protos.py`` regenerates into a temporary
directory and fails when the committed files differ.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
#: Quiver's own API package (the one most callers mean).
PACKAGE_DIR = Path("quiver") / "v1"
INIT_TEMPLATE = '"""Generated gRPC/protobuf code for {package}. Do not edit: run `python -m quiver.gen_protos`."""\n'


def package_dirs() -> list[Path]:
    """Every folder under ``protos/quiver/`` holding .proto files, relative to ``protos/``, sorted."""
    return sorted({p.parent.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / "quiver").rglob("*.proto")})


def proto_files(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The .proto sources of one package (default ``quiver/v1``), relative to ``protos/``, in a stable order."""
    return sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / package_dir).glob("*.proto"))


def all_proto_files() -> list[Path]:
    """The .proto sources of every package, relative to ``protos/``, in a stable order."""
    return [p for d in package_dirs() for p in proto_files(d)]


def _init_text(package_dir: Path) -> str:
    return INIT_TEMPLATE.format(package=".".join(package_dir.parts))


def _generated(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".py", ".pyi")) if folder.exists() else []


def generate(out: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) on every proto; return the files written under ``out``."""
    from grpc_tools import protoc

    out = Path(out)
    dirs = package_dirs()
    for d in dirs:
        (out / d).mkdir(parents=True, exist_ok=True)
    include = str(resources.files("grpc_tools") / "_proto")
    files = [str(p) for p in all_proto_files()]
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
    for d in dirs:
        (out / d / "__init__.py").write_text(_init_text(d))
    return [p for d in dirs for p in _generated(out / d)]


def stale_files() -> list[str]:
    """Generated files (relative paths) that differ from a fresh generation, or are missing or extra."""
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for d in package_dirs():
            fresh, committed = Path(tmp) / d, ROOT / d
            names = {p.name for p in _generated(fresh) + _generated(committed)}
            stale += [str(d / n) for n in sorted(names)
                      if not (fresh / n).exists() or not (committed / n).exists()
                      or (fresh / n).read_bytes() != (committed / n).read_bytes()]
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the repository)")
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    ns = parser.parse_args(argv)
    if ns.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: {name}")
        return 1 if stale else 0
    for path in generate(ns.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
