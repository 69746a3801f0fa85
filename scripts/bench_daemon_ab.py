"""The flood phase with ``--baseline DIR``: every contender's floods alternated in one run.

Measured one contender after the other (bench_daemon.fig_flood), two Runyards compare badly on
a shared box: the load of the other users moves between the minutes each one runs. So with a
baseline the flood phase runs ``max(3, floods)`` rounds; in each, every contender in a rotated
order gets a fresh daemon (the 50 sleepers running) and one quiet line flood, one quiet block
flood and one line flood under `status` calls. Each figure is then one value per round, shown
as median (min-max), with the box's load during each session.
"""

from __future__ import annotations

from typing import Any

import bench_daemon as bd
from bench_daemon_start import BoxLoad

FLOOD_KEYS = ("flood_mbps", "flood_cpu_gb", "flood_block_mbps", "flood_block_cpu_gb")


def alternate_floods(
    contenders: list[bd.Contender], phase: bd.Phase, settings: bd.Settings
) -> dict[str, dict[str, Any]]:
    """Per contender: each flood figure as a list (one value per round), its runs and loads."""
    out: dict[str, dict[str, Any]] = {
        c.name: {
            **{k: [] for k in (*FLOOD_KEYS, "flood_status_p99")},
            "flood_runs": [],
            "flood_block_runs": [],
            "loads": {"flood": []},
        }
        for c in contenders
    }
    rounds = max(3, settings.floods)
    for n in range(rounds):
        shift = n % len(contenders)
        for contender in list(contenders[shift:] + contenders[:shift]):
            print(f"  {contender.name}: flood {n + 1}/{rounds} ...", end="", flush=True)
            res = out[contender.name]
            try:
                one_round(contender, phase, settings, res)
            except Exception as exc:
                print(f" FAILED: {exc}")
                for key in bd.PHASE_KEYS["flood"]:
                    res[key] = f"n/a ({type(exc).__name__})"
                contenders = [c for c in contenders if c is not contender]
                if not contenders:
                    return no_empty_rates(out)
            finally:
                for p in phase.programs:  # the flood logs are big
                    contender.log_path(phase, p.name).unlink(missing_ok=True)
    return no_empty_rates(out)


def no_empty_rates(out: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A figure no round gave (every window n/a, see bd.Flood) says so."""
    for res in out.values():
        for key in ("flood_mbps", "flood_block_mbps", "flood_status_p99"):
            if res[key] == []:
                res[key] = "n/a (no flood's window gave a figure)"
    return out


def one_round(
    contender: bd.Contender, phase: bd.Phase, settings: bd.Settings, res: dict[str, Any]
) -> None:
    load = BoxLoad()
    with bd.serving(contender, phase) as s:
        sleepers = [p.name for p in phase.programs if p.autostart]
        s.driver.call("wait_running", names=sleepers, within=60.0)
        for name, key in (("flood", "flood"), ("blockflood", "flood_block")):
            mbps, cpu = bd.quiet_flood(s, contender.log_path(phase, name), settings, name)
            if not isinstance(mbps, str):  # n/a (why): shown among the runs, not in the median
                res[f"{key}_mbps"].append(mbps)
            res[f"{key}_cpu_gb"].append(cpu)
            res[f"{key}_runs"].append((mbps, cpu))
        during = bd.busy_flood(s, contender.log_path(phase, "flood"), settings)
        if isinstance(during, str):  # n/a (why): this round's quiet floods still count
            p99 = during
        else:
            res["flood_status_p99"].append(bd.percentile(during, 99) / 1e6)
            p99 = f"{res['flood_status_p99'][-1]:.1f} ms"
    res["loads"]["flood"].append(load.end())
    print(
        f" line {bd.num(res['flood_runs'][-1][0])} MB/s,"
        f" block {bd.num(res['flood_block_runs'][-1][0])} MB/s,"
        f" status p99 {p99} ({res['loads']['flood'][-1]})"
    )
