"""The snapshot file that `quiver admin snapshot` writes and `quiver admin restore` reads.

A plain (uncompressed) tar:

    snapshot.json     the SnapshotHeader's fields, plus "files": one
                      {"name", "shard_id", "size", "sha256", "points"} per shard
    shard-<id>.mdb    each shard's LMDB copy, as the Snapshot stream sent it

The SHA-256 of every shard is checked against the server's ``shard_end`` while
the file is written, and again, from the file, before anything is sent back.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from quiver.v1 import admin_pb2 as apb
from shard.errors import InvalidArgument, QuiverError

FORMAT_VERSION = 1
MANIFEST_NAME = "snapshot.json"
_COPY_BYTES = 1 << 20


class SnapshotFileError(InvalidArgument):
    """A snapshot file that cannot be restored: not a snapshot, truncated, or a checksum that does not match."""


class SnapshotStreamError(QuiverError):
    """The server's Snapshot stream is out of order or its data does not match its checksum."""


def shard_file_name(shard_id: int) -> str:
    return f"shard-{shard_id}.mdb"


@dataclass
class ShardFile:
    name: str
    shard_id: int
    size: int
    sha256: str  # hex
    points: int


@dataclass
class Manifest:
    """snapshot.json: the header of the stream and what the tar holds."""

    format_version: int
    collection: str
    collection_json: str
    shard_ids: list[int]
    created_at: str
    files: list[ShardFile] = field(default_factory=list)

    def header(self, restore_as: str = "") -> apb.SnapshotHeader:
        return apb.SnapshotHeader(format_version=self.format_version, collection=self.collection,
                                  collection_json=self.collection_json, shard_ids=self.shard_ids,
                                  restore_as=restore_as, created_at=self.created_at)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Manifest":
        d = json.loads(text)
        files = [ShardFile(str(f["name"]), int(f["shard_id"]), int(f["size"]), str(f["sha256"]),
                           int(f.get("points", 0))) for f in d["files"]]
        return cls(int(d["format_version"]), str(d["collection"]), str(d["collection_json"]),
                   [int(s) for s in d["shard_ids"]], str(d.get("created_at", "")), files)


# ------------------------------------------------------------------ writing


def write(parts: Iterable[apb.SnapshotPart], out: str | Path,
          on_bytes: Callable[[int], None] | None = None) -> Manifest:
    """Write a Snapshot stream to the tar file ``out``, via ``out``.partial and a rename.

    Each shard's bytes are spooled next to ``out`` while their SHA-256 is
    computed; a size or checksum that differs from the shard's ``shard_end``
    raises SnapshotStreamError and leaves no file behind.
    """
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    spool = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        manifest = _receive(parts, spool, on_bytes)
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            data = manifest.to_json().encode()
            info = tarfile.TarInfo(MANIFEST_NAME)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
            for f in manifest.files:
                tar.add(spool / f.name, arcname=f.name, recursive=False)
        with open(partial, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, out)
        return manifest
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _receive(parts: Iterable[apb.SnapshotPart], spool: Path, on_bytes) -> Manifest:
    manifest: Manifest | None = None
    open_id: int | None = None
    fh, h, size = None, None, 0
    ended: set[int] = set()
    try:
        for part in parts:
            kind = part.WhichOneof("part")
            if kind == "header":
                if manifest is not None:
                    raise SnapshotStreamError("snapshot stream: a second header")
                hd = part.header
                if hd.format_version != FORMAT_VERSION:
                    raise SnapshotStreamError(f"snapshot format {hd.format_version} is not supported "
                                              f"(this client reads {FORMAT_VERSION})")
                manifest = Manifest(hd.format_version, hd.collection, hd.collection_json, list(hd.shard_ids),
                                    hd.created_at)
                continue
            if manifest is None:
                raise SnapshotStreamError(f"snapshot stream: {kind} before the header")
            sid = part.chunk.shard_id if kind == "chunk" else part.shard_end.shard_id
            if sid not in manifest.shard_ids or sid in ended:
                raise SnapshotStreamError(f"snapshot stream: unexpected data for shard {sid}")
            if open_id != sid:
                if open_id is not None:
                    raise SnapshotStreamError(f"snapshot stream: shard {sid} began before shard {open_id} ended")
                open_id, fh, h, size = sid, open(spool / shard_file_name(sid), "wb"), hashlib.sha256(), 0
            if kind == "chunk":
                data = part.chunk.data
                fh.write(data)
                h.update(data)
                size += len(data)
                if on_bytes is not None:
                    on_bytes(len(data))
                continue
            end = part.shard_end
            fh.close()
            digest = h.hexdigest()
            if end.size != size or end.sha256.lower() != digest:
                raise SnapshotStreamError(
                    f"shard {sid}: received {size} bytes with SHA-256 {digest}, but the server says "
                    f"{end.size} bytes with SHA-256 {end.sha256}; the snapshot is corrupt, try again")
            manifest.files.append(ShardFile(shard_file_name(sid), sid, size, digest, end.points))
            ended.add(sid)
            open_id, fh = None, None
    finally:
        if fh is not None:
            fh.close()
    if manifest is None:
        raise SnapshotStreamError("snapshot stream ended before its header")
    missing = [s for s in manifest.shard_ids if s not in ended]
    if missing:
        raise SnapshotStreamError(f"snapshot stream ended before shard(s) {missing} were complete")
    return manifest


# ------------------------------------------------------------------ reading


def _open(path: str | Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:")
    except FileNotFoundError:
        raise SnapshotFileError(f"{path}: no such file") from None
    except (tarfile.TarError, OSError) as e:
        raise SnapshotFileError(f"{path} is not a snapshot file (not a tar archive: {e})") from None


def verify(path: str | Path) -> Manifest:
    """Read snapshot.json and check every shard file's size and SHA-256; raise SnapshotFileError if any differs."""
    with _open(path) as tar:
        try:
            raw = tar.extractfile(MANIFEST_NAME).read()
        except (KeyError, AttributeError):
            raise SnapshotFileError(f"{path} is not a snapshot file (no {MANIFEST_NAME})") from None
        except (tarfile.TarError, OSError) as e:
            raise SnapshotFileError(f"{path}: cannot read {MANIFEST_NAME}: {e}") from None
        try:
            manifest = Manifest.from_json(raw)
        except (ValueError, KeyError, TypeError) as e:
            raise SnapshotFileError(f"{path}: {MANIFEST_NAME} is malformed ({type(e).__name__}: {e})") from None
        if manifest.format_version != FORMAT_VERSION:
            raise SnapshotFileError(f"{path}: snapshot format {manifest.format_version} is not supported "
                                    f"(this client reads {FORMAT_VERSION})")
        if sorted(f.shard_id for f in manifest.files) != sorted(manifest.shard_ids):
            raise SnapshotFileError(f"{path}: {MANIFEST_NAME} lists files for shards "
                                    f"{sorted(f.shard_id for f in manifest.files)} but the snapshot holds shards "
                                    f"{sorted(manifest.shard_ids)}")
        for f in manifest.files:
            h, size = hashlib.sha256(), 0
            try:
                fh = tar.extractfile(f.name)
                if fh is None:
                    raise KeyError(f.name)
                while chunk := fh.read(_COPY_BYTES):
                    h.update(chunk)
                    size += len(chunk)
            except KeyError:
                raise SnapshotFileError(f"{path}: {f.name} is missing") from None
            except (tarfile.TarError, OSError, EOFError) as e:
                raise SnapshotFileError(f"{path}: cannot read {f.name} ({e}); the file is truncated or "
                                        "corrupt") from None
            if size != f.size or h.hexdigest() != f.sha256.lower():
                raise SnapshotFileError(f"{path}: {f.name} does not match its checksum ({size} bytes, SHA-256 "
                                        f"{h.hexdigest()}; expected {f.size} bytes, SHA-256 {f.sha256}): the "
                                        "file is corrupt; nothing was restored")
    return manifest


def iter_member(path: str | Path, name: str, chunk_bytes: int = _COPY_BYTES) -> Iterator[bytes]:
    """The bytes of the tar member ``name``, in chunks of at most ``chunk_bytes``."""
    with _open(path) as tar:
        fh = tar.extractfile(name)
        if fh is None:
            raise SnapshotFileError(f"{path}: {name} is missing")
        while chunk := fh.read(chunk_bytes):
            yield chunk
