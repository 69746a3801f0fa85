"""``runs.show``: one run's records (input, output, meta, conditions) and its file list (the
bundle's ARTIFACT_INDEX.json entries: path, size, sha256, role)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec

from protocol import messages as m
from runtime.tree import RuntimeTree

from .context import Context, HandlerError

#: The members of an index entry the reply carries.
ENTRY_KEYS = ("path", "size", "sha256", "role")


def artifact_entries(bundle: Path) -> list[dict[str, Any]]:
    """The entries of ``bundle``'s ARTIFACT_INDEX.json; [] when it is missing or malformed
    (``verify`` is what reports a broken bundle; showing one must not fail)."""
    from runtime.runs.artifact_index import ArtifactIndexError, read_artifact_index

    try:
        entries = read_artifact_index(bundle)
    except ArtifactIndexError:
        return []
    return [{k: f[k] for k in ENTRY_KEYS if k in f} for f in entries]


def _show(tree: RuntimeTree, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from runtime.runs import find_run, show_run

    run = show_run(tree, run_id)
    return msgspec.to_builtins(run), artifact_entries(find_run(tree, run_id))


async def handle(ctx: Context, req: m.RunsShow) -> m.Reply:
    # runtime.runs loads jsonschema and cryptography: only once runs are used.
    from runtime.runs import RunError

    try:
        run, artifacts = await asyncio.to_thread(_show, ctx.tree, req.run_id)
    except RunError as exc:
        raise HandlerError("not_found", str(exc)) from None
    return m.RunShowReply(run=run, artifacts=artifacts)
