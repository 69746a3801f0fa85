"""``check_determinism``: is an engine deterministic on a sealed run's input? Ask before relying.

``runyard replay RUN --times N`` replays the sealed run N times (each one a full ``replay_run``:
verified, re-executed on the sealed RUN_INPUT bytes and inputs/, recorded under replays/ and in
the audit trail) and compares every result, the sealed run's included. A result is the sha256
of RUN_OUTPUT.json and of every artifact, read from the ARTIFACT_INDEX.json of the run and of
each replay record (both sealed, so the digests are the ones their SHA256SUMS.txt vouch for).

Deterministic means every result is the sealed run's: byte-identical RUN_OUTPUT.json *and*
artifacts (stricter than the replay rule, which compares RUN_OUTPUT only: an engine whose
artifacts vary is not one to trust blindly). Otherwise the report counts the distinct results
and carries, once each, the differing JSON paths with their values and the differing files with
their sizes (``explain.py``). A run that fails verification is never executed: not deterministic,
with the reason.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from runyard.runtime.config.project import Project
from runyard.runtime.core.tree import RuntimeTree

from .artifact_index import ArtifactIndexError, read_artifact_index
from .engine import DEFAULT_TIMEOUT
from .layout import ARTIFACTS_DIR, RUN_OUTPUT
from .model import DeterminismReport, ReplayAttempt, ReplayReport, RunError
from .replay import replay_run
from .run import EventCallback

__all__ = ["MAX_TIMES", "check_determinism"]

#: The most re-executions one check runs (each is a real engine run and a replay record).
MAX_TIMES = 100

Result = frozenset[tuple[str, str]]


def _result_of(folder: Path) -> Result:
    """(path, sha256) of RUN_OUTPUT.json and every artifact of a run or replay record."""
    try:
        files = read_artifact_index(folder)
    except ArtifactIndexError as exc:
        return frozenset({("(unreadable)", str(exc))})
    return frozenset(
        (f["path"], str(f.get("sha256")))
        for f in files
        if f["path"] == RUN_OUTPUT or f["path"].startswith(f"{ARTIFACTS_DIR}/")
    )


def check_determinism(
    tree: RuntimeTree,
    path: str | os.PathLike[str],
    times: int,
    *,
    pubkey: Any = None,
    on_event: EventCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    project: Project | None = None,
    cancel: threading.Event | None = None,
) -> DeterminismReport:
    """Replay ``path`` ``times`` times and compare every result; see the module doc."""
    if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= MAX_TIMES:
        raise RunError(f"--times must be an integer from 1 to {MAX_TIMES}, got {times!r}")
    run_dir = Path(path)
    results: list[Result] = []
    report: DeterminismReport | None = None
    for _ in range(times):
        if cancel is not None and cancel.is_set():
            raise RunError("determinism check cancelled")
        replay = replay_run(
            tree,
            run_dir,
            pubkey=pubkey,
            on_event=on_event,
            timeout=timeout,
            project=project,
            cancel=cancel,
        )
        if report is None:
            report = _empty_report(replay, times)
        if replay.record is None:  # failed verification: nothing was executed
            report.reason = replay.reason
            return report
        if not results:
            results.append(_result_of(run_dir))
        _add_attempt(report, replay, results)
    assert report is not None  # times >= 1
    _conclude(report, results)
    return report


def _empty_report(replay: ReplayReport, times: int) -> DeterminismReport:
    return DeterminismReport(
        run_dir=replay.run_dir,
        run_id=replay.run_id,
        engine=replay.engine,
        engine_version=replay.engine_version,
        times=times,
        deterministic=False,
        reason="",
    )


def _add_attempt(report: DeterminismReport, replay: ReplayReport, results: list[Result]) -> None:
    """Record one replay: which result it gave, and its differences not seen before."""
    result = _result_of(Path(replay.record or ""))
    if result not in results:
        results.append(result)
    variant = results.index(result)
    if variant == 0:
        reason = "byte-identical to the sealed run"
    else:
        reason = replay.reason
        if replay.artifact_differences:
            reason += "; artifacts differ: " + ", ".join(replay.artifact_differences[:10])
    report.attempts.append(
        ReplayAttempt(
            replay_id=replay.replay_id,
            record=replay.record,
            identical=variant == 0,
            variant=variant,
            reason=reason,
        )
    )
    seen = {d.path for d in report.value_differences}
    report.value_differences += [d for d in replay.value_differences if d.path not in seen]
    seen = {d.path for d in report.file_differences}
    report.file_differences += [d for d in replay.file_differences if d.path not in seen]


def _conclude(report: DeterminismReport, results: list[Result]) -> None:
    report.identical = sum(a.identical for a in report.attempts)
    report.variants = len(results)
    report.deterministic = report.identical == report.times
    if report.deterministic:
        artifacts = sum(1 for p, _ in results[0] if p != RUN_OUTPUT)
        report.reason = (
            f"deterministic on this input: the sealed run and {report.times} re-execution(s) "
            f"gave byte-identical RUN_OUTPUT.json and {artifacts} artifact(s)"
        )
        return
    where = [d.path for d in report.value_differences] + [d.path for d in report.file_differences]
    report.reason = (
        f"not deterministic on this input: {report.identical} of {report.times} re-execution(s) "
        f"byte-identical to the sealed run, {report.variants} distinct results"
        + (f"; differs at {', '.join(where[:10])}" if where else "")
    )
