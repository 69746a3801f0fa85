"""Sealed engine runs: execute, seal, verify, replay (the sealed-run spec, RFC 8785 + SHA-256).

Importable without the daemon; every function is synchronous and thread-safe, so a daemon
handler runs it with ``asyncio.to_thread`` and forwards ``on_event`` callbacks as ``run.<id>``
events::

    from runyard.runtime.runs import execute_and_seal, verify_run, replay_run

    result = execute_and_seal(tree, "heat1d", {"cells": 5, "steps": 3}, on_event=print)
    report = verify_run(result.run_dir)            # report.ok, report.checks
    replay = replay_run(tree, result.run_dir)      # replay.replayable, replay.differences

Modules (one concept each):

    layout       paths, file names, run ids, staging dirs     model      errors, events, reports
    definitions  config/{engine}/ definitions, install         jsonio     strict JSON, schemas
    sanitize     secrets out of context and logs               process    one engine process
    engine       the engine contract, RUN_OUTPUT, conditions   chain      --from-run routing
    sealing      hashes, ARTIFACT_INDEX, SHA256SUMS, signature run        execute_and_seal
    verify       verify_run                                 replay     replay_run
    listing      list_runs, show_run                           explain    replay differences shown
    determinism  check_determinism (replay --times N)
"""

from __future__ import annotations

from .chain import parse_from_run
from .definitions import EngineDefinitions, install_definitions, load_definitions
from .determinism import check_determinism
from .layout import find_run, new_run_id
from .listing import list_runs, show_run
from .model import (
    Check,
    DeterminismReport,
    ReplayReport,
    RunError,
    RunMilestone,
    RunRejected,
    RunResult,
    RunSummary,
    VerifyReport,
)
from .replay import replay_run
from .run import execute_and_seal
from .sanitize import sanitize_context
from .verify import verify_run

__all__ = [
    "Check",
    "DeterminismReport",
    "EngineDefinitions",
    "ReplayReport",
    "RunError",
    "RunMilestone",
    "RunRejected",
    "RunResult",
    "RunSummary",
    "VerifyReport",
    "check_determinism",
    "execute_and_seal",
    "find_run",
    "install_definitions",
    "list_runs",
    "load_definitions",
    "new_run_id",
    "parse_from_run",
    "replay_run",
    "sanitize_context",
    "show_run",
    "verify_run",
]
