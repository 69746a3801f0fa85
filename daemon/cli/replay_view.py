"""How ``runyard replay`` shows a verdict: a mismatch with both values side by side, and the
determinism check of ``--times N``.

A replay that differs prints, on stderr, each differing JSON path as ``  differs: PATH`` (the
line scripts grep) followed by ``    original: VALUE`` and ``    replayed: VALUE`` (compact JSON,
truncated by the library), and each differing artifact with both sizes. ``--times N`` prints one
line per re-execution on stdout, then the verdict: ``deterministic: ...`` (exit 0) or
``NOT deterministic: ...`` on stderr with the differences (exit 1).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from runyard.runtime.runs.model import (
        DeterminismReport,
        FileDifference,
        ReplayReport,
        ValueDifference,
    )

__all__ = ["print_determinism", "print_differences", "print_replay"]


def _size(size: int | None) -> str:
    return "absent" if size is None else f"{size} bytes"


def print_differences(
    values: Sequence[ValueDifference], files: Sequence[FileDifference], out: TextIO
) -> None:
    for d in values:
        print(f"  differs: {d.path}", file=out)
        print(f"    original: {d.original}", file=out)
        print(f"    replayed: {d.replayed}", file=out)
    for f in files:
        sizes = f"original {_size(f.original_size)}, replayed {_size(f.replayed_size)}"
        print(f"  file differs: {f.path} ({sizes})", file=out)


def print_replay(report: ReplayReport) -> int:
    """A replay's verdict for people; the exit status (0 replayable, 1 not)."""
    for check in report.verify.failed:
        print(f"FAILED   {check.name:<16} {check.detail}")
    if report.record:
        print(f"replay record: {report.record}")
    if report.replayable:
        print(
            f"replayable: {report.run_id} ({report.engine} {report.engine_version}): {report.reason}"
        )
        if report.file_differences:
            print("artifacts differ (informational, the replay rule compares RUN_OUTPUT.json):")
            print_differences([], report.file_differences, sys.stdout)
        return 0
    print(f"NOT replayable: run {report.run_id} is invalid: {report.reason}", file=sys.stderr)
    print_differences(report.value_differences, report.file_differences, sys.stderr)
    return 1


def print_determinism(report: DeterminismReport) -> int:
    """A ``--times N`` verdict for people; the exit status (0 deterministic, 1 not)."""
    for i, attempt in enumerate(report.attempts, 1):
        state = "identical" if attempt.identical else f"DIFFERS (result {attempt.variant + 1})"
        print(f"replay {i}/{report.times}: {state}: {attempt.record}")
    head = f"{report.run_id} ({report.engine} {report.engine_version})"
    if report.deterministic:
        print(f"deterministic: {head}: {report.reason}")
        return 0
    print(f"NOT deterministic: {head}: {report.reason}", file=sys.stderr)
    print_differences(report.value_differences, report.file_differences, sys.stderr)
    return 1
