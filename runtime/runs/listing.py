"""Listing and showing runs (for ``runyard runs`` and the daemon's ``runs.list`` / ``runs.show``).

Reads only what is on disk: sealed runs under ``data/*/runs/`` and, on request, rejection
records under ``data/*/rejected/``. Staging dirs (``.tmp-*``) are never listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runyard.runtime.core.capped import RUN_FILE, read_capped
from runyard.runtime.core.errors import FileRefused
from runyard.runtime.core.tree import RuntimeTree

from .jsonio import JSONInputError, strict_loads
from .layout import REJECTION_FILE, RUN_ID_RE, RUN_INPUT, RUN_META, SIG_FILE, find_run
from .model import RunError, RunSummary

__all__ = ["list_runs", "show_run"]


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = strict_loads(read_capped(path, RUN_FILE, follow_symlinks=False))
    except (OSError, FileRefused, JSONInputError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _sealed(engine: str, path: Path) -> RunSummary:
    meta = _read(path / RUN_META)
    inp = _read(path / RUN_INPUT)
    duration = meta.get("duration")
    return RunSummary(
        run_id=path.name,
        engine=engine,
        status="sealed",
        path=str(path),
        engine_code=str(inp.get("engine_code", "")),
        engine_version=str(inp.get("engine_version", "")),
        project_id=str(inp.get("project_id", "")),
        started_at=str(meta.get("started_at", "")),
        duration=float(duration) if isinstance(duration, int | float) else None,
        signed=(path / SIG_FILE).exists(),
    )


def _rejected(engine: str, path: Path) -> RunSummary:
    rec = _read(path / REJECTION_FILE)
    return RunSummary(
        run_id=path.name,
        engine=engine,
        status="rejected",
        path=str(path),
        engine_code=str(rec.get("engine_code", "")),
        engine_version=str(rec.get("engine_version", "")),
        started_at=str(rec.get("at", "")),
        reason=str(rec.get("reason", "")),
    )


def list_runs(
    tree: RuntimeTree, engine: str | None = None, *, include_rejected: bool = False
) -> list[RunSummary]:
    """Runs of ``engine`` (or of every engine), oldest first (run ids sort by time)."""
    out: list[RunSummary] = []
    if not tree.data_dir.is_dir():
        return out
    engines = [engine] if engine else sorted(p.name for p in tree.data_dir.iterdir())
    for name in engines:
        kinds = [("runs", _sealed)]
        if include_rejected:
            kinds.append(("rejected", _rejected))
        for sub, make in kinds:
            folder = tree.data_dir / name / sub
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.is_dir() and RUN_ID_RE.match(path.name):
                    out.append(make(name, path))
    out.sort(key=lambda r: (r.run_id, r.engine))
    return out


def show_run(tree: RuntimeTree, run_id: str) -> dict[str, Any]:
    """Everything about one sealed run: summary, RUN_INPUT, RUN_OUTPUT, RUN_META."""
    path = find_run(tree, run_id)
    engine = path.parent.parent.name
    summary = _sealed(engine, path)
    docs = {name: _read(path / name) for name in (RUN_INPUT, "RUN_OUTPUT.json", RUN_META)}
    if not docs[RUN_INPUT]:
        raise RunError(f"{path}: RUN_INPUT.json unreadable")
    return {
        "summary": summary,
        "run_input": docs[RUN_INPUT],
        "run_output": docs["RUN_OUTPUT.json"],
        "run_meta": docs[RUN_META],
    }
