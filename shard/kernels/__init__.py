"""Numba kernels (every ``cache=True`` function of Quiver lives here).

Importing the package first points numba's on-disk cache at a directory named
after a digest of every kernel source in it. Numba keys a cached function by
its own file alone, so a kernel whose inlined helpers changed in another file
(``dot8.row_score`` compiled into ``scalar.scalar_scan``, say) would otherwise
load its stale machine code after a checkout or an upgrade; this way any
change to any kernel file starts a fresh cache. The directory is inside
``NUMBA_CACHE_DIR`` when that is set (``./run`` and the image set it), else
beside these files.
"""

import hashlib
import os
from pathlib import Path

from numba.core import config


def sources_digest(folder: Path = Path(__file__).parent) -> str:
    """The first 16 hex digits of a SHA-256 over the sources in folder (this package's)."""
    h = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


_ROOT = config.CACHE_DIR or os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
config.CACHE_DIR = os.path.join(_ROOT, "quiver-" + sources_digest())
