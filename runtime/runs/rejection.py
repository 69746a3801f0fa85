"""A refused run, kept for diagnosis: what it produced and REJECTION.json (stage, reason) under
``data/{engine}/rejected/{run_id}/``, never among the sealed runs. Filed by ``execute_and_seal``
(run.py) when a stage refuses; a record that cannot be written is dropped, never half kept."""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

from runyard.runtime.core.tree import RuntimeTree

from .definitions import EngineDefinitions
from .jsonio import canonical
from .layout import (
    INPUTS_DIR,
    REJECTION_FILE,
    RUN_INPUT,
    STDERR_LOG,
    Staging,
    now_rfc3339,
    rejected_dir,
)
from .model import RunRejected

__all__ = ["file_rejection"]


def file_rejection(
    tree: RuntimeTree,
    engine: str,
    staging: Staging,
    run_id: str,
    rej: RunRejected,
    run_input: dict[str, Any] | None,
    defs: EngineDefinitions,
) -> str | None:
    """Keep what the run produced, with REJECTION.json, under data/{engine}/rejected/{run_id}."""
    record = staging.root / "record"
    try:
        if staging.run_dir.exists():
            os.rename(staging.run_dir, record)
        record.mkdir(exist_ok=True)
        for path in record.rglob("*"):
            if path.is_file():
                os.chmod(path, 0o644)
        for src, rel in ((staging.artifacts, "artifacts"), (staging.inputs, INPUTS_DIR)):
            if src.is_dir():
                os.chmod(src, 0o755)
                if any(src.iterdir()):
                    os.rename(src, record / rel)
        if staging.stderr.exists():
            (record / "logs").mkdir(exist_ok=True)
            os.rename(staging.stderr, record / STDERR_LOG)
        if staging.stdout.exists():
            (record / "logs").mkdir(exist_ok=True)
            os.rename(staging.stdout, record / "logs" / "engine.stdout")
        if run_input is not None and not (record / RUN_INPUT).exists():
            with contextlib.suppress(ValueError, TypeError):
                (record / RUN_INPUT).write_bytes(canonical(run_input))
        doc = {
            "at": now_rfc3339(),
            "engine": engine,
            "engine_code": defs.engine_code,
            "engine_version": defs.engine_version,
            "project_id": run_input.get("project_id") if run_input else None,
            "reason": rej.reason,
            "run_id": run_id,
            "stage": rej.stage,
        }
        (record / REJECTION_FILE).write_bytes(canonical(doc))
        dest = rejected_dir(tree, engine) / run_id
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(record, dest)
        return str(dest)
    except OSError:
        shutil.rmtree(record, ignore_errors=True)
        return None
