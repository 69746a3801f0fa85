"""``runs.show``: one run's records (input, output, meta, conditions) and its file list (the
run directory's ARTIFACT_INDEX.json entries: path, size, sha256, role)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import msgspec

from runyard.protocol import messages as m
from runyard.protocol.payloads import ArtifactEntry, RunDetails, from_runtime
from runyard.runtime.core.capped import RUN_FILE, read_capped
from runyard.runtime.core.errors import FileRefused
from runyard.runtime.core.tree import RuntimeTree

from .context import Context, HandlerError

#: The members of an index entry the reply carries.
ENTRY_KEYS = ("path", "size", "sha256", "role")


def artifact_entries(run_dir: Path) -> list[ArtifactEntry]:
    """The entries of ``run_dir``'s ARTIFACT_INDEX.json; [] when it is missing or malformed
    (``verify`` is what reports a broken sealed run; showing one must not fail)."""

    from runyard.runtime.runs.layout import INDEX_FILE

    try:
        doc = json.loads(read_capped(run_dir / INDEX_FILE, RUN_FILE, follow_symlinks=False))
    except (OSError, ValueError, FileRefused):
        return []
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list):
        return []
    entries = []
    for f in files:
        if isinstance(f, dict) and isinstance(f.get("path"), str):
            # A malformed member is left out: showing a sealed run must not fail.
            with contextlib.suppress(msgspec.ValidationError):
                entries.append(from_runtime({k: f[k] for k in ENTRY_KEYS if k in f}, ArtifactEntry))
    return entries


def _show(tree: RuntimeTree, run_id: str) -> tuple[RunDetails, list[ArtifactEntry]]:
    from runyard.runtime.runs import find_run, show_run

    run = show_run(tree, run_id)
    return from_runtime(run, RunDetails), artifact_entries(find_run(tree, run_id))


async def handle(ctx: Context, req: m.RunsShow) -> m.Reply:
    # runtime.runs loads jsonschema and cryptography: only once runs are used.
    from runyard.runtime.runs import RunError

    try:
        run, artifacts = await asyncio.to_thread(_show, ctx.tree, req.run_id)
    except RunError as exc:
        raise HandlerError(m.ErrorCode.NOT_FOUND, str(exc)) from None
    return m.RunShowReply(run=run, artifacts=artifacts)
