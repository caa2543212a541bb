"""The previous embedded engine (an in-process mirror index over qdrant-client's local mode), loaded from
git history so that ``bench.core`` can measure it side by side with Qdrant Edge. It is not part of the
package any more; nothing but the benchmark imports it.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# The last commit whose embedded engine was the mirror over local mode.
LEGACY_COMMIT = "e4edf82"
_FILES = ("filters.py", "local_index.py", "qdrant.py")
_PACKAGE = "lightmem_legacy_store"


def load() -> Any:
    """The previous ``QdrantStore`` class; ``RuntimeError`` when git or the commit is not available."""
    if _PACKAGE in sys.modules:
        return sys.modules[f"{_PACKAGE}.qdrant"].QdrantStore
    root = Path(__file__).resolve().parents[1]
    folder = Path(tempfile.mkdtemp(prefix="lightmem-legacy-")) / _PACKAGE
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for name in _FILES:
        try:
            text = subprocess.run(["git", "show", f"{LEGACY_COMMIT}:lightmem_core/stores/{name}"], cwd=root,
                                  capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise RuntimeError(f"cannot read the previous engine from git ({LEGACY_COMMIT}): {exc}") from exc
        for module in ("filters", "local_index"):
            text = text.replace(f"lightmem_core.stores.{module}", f"{_PACKAGE}.{module}")
        (folder / name).write_text(text)
    sys.path.insert(0, str(folder.parent))
    return importlib.import_module(f"{_PACKAGE}.qdrant").QdrantStore
