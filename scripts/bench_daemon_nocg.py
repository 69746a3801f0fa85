"""Benchmark `daemon`, the cold phase's no-cgroup variant: what cgroup containment costs Runyard
at cold start, shown as informational rows beside the goal's figure (see bench_daemon.py).

Runyard puts each service in its own cgroup before the program runs (daemon/cgroup_join.py: a
``/bin/sh`` step writes itself into ``cgroup.procs``, then execs the program), which supervisord,
Circus and pm2 do not do at all. ``RunyardSubreaper`` is the same Runyard with ``containment =
"subreaper"`` for every service (daemon/containment.py): no cgroup, no shell step, the
containment class of the anchors. It runs in the cold phase (part of the full run, or
``--only-phase cold`` alone), alternated launch by launch with the other contenders (bench_daemon_start.alternate_cold), and
its figures become Runyard's ``cold_nocg_s`` / ``cold500_nocg_s`` rows; the default rows stay the
goal's figures.

A setting that silently did not apply would make the rows lie, so every launch of every
Runyard reports, off the clock, what each service's status says (``containment``) and which
cgroup v2 its process is in (``/proc/PID/cgroup``); a variant launch with any service not under
the subreaper, or in a ``runyard-*`` cgroup, fails (``check_contained``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import bench_daemon as bd

__all__ = [
    "NOCG_KEYS",
    "RunyardSubreaper",
    "check_contained",
    "containment_of",
    "fold_subreaper",
    "subreaper_note",
]

#: The default rows' keys -> the variant's rows' keys.
NOCG_KEYS = {"cold_s": "cold_nocg_s", "cold500_s": "cold500_nocg_s"}
SUBREAPER = "subreaper"
#: Where Runyard's service cgroups live: ``<own cgroup>/runyard-<hash>/<service>`` (daemon/cgroup.py).
OUR_CGROUPS = "/runyard-"


class RunyardSubreaper(bd.Runyard):
    """Runyard with ``containment = "subreaper"`` for every service: the cold phase only."""

    name = "runyard@subreaper"
    service_settings = f'containment = "{SUBREAPER}"\n'


def unified_cgroup(pid: int | None) -> str:
    """The cgroup v2 path of ``pid`` (the ``0::`` line, also on a hybrid host), "" if gone."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return ""


def containment_of(services: list[Any]) -> dict[str, list[str]]:
    """Driver side: per service, [the containment its status says, its process's cgroup]; ""
    from a daemon whose status has no containment (a --baseline before issue 12)."""
    return {s.name: [getattr(s, "containment", ""), unified_cgroup(s.pid)] for s in services}


def check_contained(contender: bd.Contender, reply: dict[str, Any], expect: int) -> str:
    """What one cold launch's services were kept by, as a note for its load line ("" for a
    contender that does not say); raises BenchError when the variant's setting did not apply."""
    contained: dict[str, list[str]] = reply.get("contained") or {}
    if not contained and not isinstance(contender, RunyardSubreaper):
        return ""
    kinds = Counter(kind or "unknown" for kind, _ in contained.values())
    ours = sum(OUR_CGROUPS in path for _, path in contained.values())
    said = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    summary = f"services: {said or 'none'}, {ours} in a runyard-* cgroup"
    if isinstance(contender, RunyardSubreaper) and (kinds != {SUBREAPER: expect} or ours):
        raise bd.BenchError(f'containment = "{SUBREAPER}" did not apply ({summary})')
    return summary


def fold_subreaper(colds: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """alternate_cold's figures with the variant's moved to Runyard's ``*_nocg_s`` rows. An
    anchor's cell in those rows is its own cold figure (it makes no cgroups either), so the
    ratio column compares like with like; runyard@base has none."""
    variant = colds.pop(RunyardSubreaper.name, None)
    if variant is None:
        return colds
    runyard = colds.setdefault("runyard", {"loads": {}})
    for key, nocg in NOCG_KEYS.items():
        if key in variant:
            runyard[nocg] = variant[key]
        if key in variant.get("loads", {}):
            runyard.setdefault("loads", {})[nocg] = variant["loads"][key]
    runyard["cold_nocg_cpu_s"] = variant.get("cold_cpu_s", [])
    for name, res in colds.items():
        if not name.startswith("runyard") and "cold_s" in res:
            value = res["cold_s"]
            res["cold_nocg_s"] = list(value) if isinstance(value, list) else value
    return colds


def subreaper_note(results: dict[str, dict[str, Any]]) -> list[str]:
    """The note under the table that says what the no-cgroup rows are, when they were run."""
    runyard = results.get("runyard", {})
    if not any(isinstance(runyard.get(k), list) for k in NOCG_KEYS.values()):
        return []
    return [
        "no cgroup (containment = subreaper) rows: the same Runyard with every service set to "
        'containment = "subreaper" (no cgroup and no /bin/sh join step per service, the '
        "containment class of supervisord, Circus and pm2), alternated launch by launch with "
        "the others; each launch checked its services' status and /proc/PID/cgroup (see the "
        "loads above). Informational: what cgroup containment costs at cold start; the "
        "default rows are the goal's figures, and an anchor's cell there is its own cold run."
    ]
