"""Reading ARTIFACT_INDEX.json: the one parser of a sealed run's file list.

    {"files": [{"path": ..., "role": ..., "sha256": ..., "size": ...}, ...], "run_id": ...}

written (canonical JSON) by ``sealing.seal_run``. ``index_entries`` takes a parsed document
and returns the entries that have a path, in index order, with the count of those that do not;
a document without a ``files`` array is an ``ArtifactIndexError``. ``read_artifact_index``
reads a run directory's file (strict JSON, ``jsonio.strict_loads``) and does the same. Whether the
entries are *right* (hashes, sizes, roles) is ``verify``'s question, not this module's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runyard.runtime.core.errors import ArtifactIndexError

from .jsonio import JSONInputError, strict_loads
from .layout import INDEX_FILE

__all__ = ["ArtifactIndexError", "index_entries", "read_artifact_index"]


def index_entries(doc: Any) -> tuple[list[dict[str, Any]], int]:
    """(entries with a string path, in order; how many entries lack one) of a parsed index."""
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list):
        raise ArtifactIndexError(f"{INDEX_FILE}: not an object with a files array")
    entries = [f for f in files if isinstance(f, dict) and isinstance(f.get("path"), str)]
    return entries, len(files) - len(entries)


def read_artifact_index(run_dir: Path) -> list[dict[str, Any]]:
    """The entries of ``run_dir``'s ARTIFACT_INDEX.json (those with a path)."""
    try:
        doc = strict_loads((run_dir / INDEX_FILE).read_bytes())
    except OSError as exc:
        raise ArtifactIndexError(f"{INDEX_FILE}: cannot read: {exc.strerror or exc}") from None
    except JSONInputError as exc:
        raise ArtifactIndexError(f"{INDEX_FILE}: {exc}") from None
    return index_entries(doc)[0]
