#!/usr/bin/env python3
"""Restart what is stuck: an example of a watchdog built on ``status`` and ``restart``.

Restarts a service that is fatal, or autostart and running but not ready (its probe fails)
for longer than ``--grace`` seconds, counted from the process's start or from when this script
last saw it ready. ``--once``: one pass (cron, CI). Run it with the Python that has runyard.

Exit codes: 0 ok, 1 a restart was refused or failed, 2 usage, 3 daemon unreachable.
"""

from __future__ import annotations

import sys
import time
from argparse import ArgumentParser, RawDescriptionHelpFormatter

from runyard.protocol.client import Client, DaemonUnreachable, RemoteError
from runyard.protocol.messages import ServiceStatus

#: (name, pid) -> since when that process is unready; None: seen ready, not unready since.
Seen = dict[tuple[str, int | None], float | None]


def why_restart(s: ServiceStatus, grace: float, seen: Seen, now: float) -> str | None:
    if s.state == "fatal":
        return f"fatal: {s.reason}"
    key = (s.name, s.pid)
    if s.ready:
        seen[key] = None  # an unready spell of this process would start after now
    if not (s.autostart and s.state == "running" and s.ready is False):
        return None
    since = seen.get(key)
    if since is None:  # unready since its start, or since now if it was ready before
        since = seen[key] = now if key in seen else (s.started_at or now)
    unready = now - since
    return f"not ready for {unready:.0f}s: {s.ready_detail}" if unready > grace else None


def sweep(client: Client, grace: float, seen: Seen) -> int:
    """One pass; the number of restarts that failed."""
    services, now, failed = client.status().services, time.time(), 0
    for key in set(seen) - {(s.name, s.pid) for s in services}:
        del seen[key]  # gone, or restarted: forget it
    for s in services:
        if (reason := why_restart(s, grace, seen, now)) is None:
            continue
        try:
            client.restart([s.name])
            print(f"restarted {s.name} ({reason})", flush=True)
        except RemoteError as exc:
            print(f"could not restart {s.name}: {exc}", file=sys.stderr, flush=True)
            failed += 1
    return failed


def main() -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="runtime tree (default: RUNYARD_ROOT, ./runtime, ...)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between passes")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds unready to tolerate")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    args = parser.parse_args()
    seen: Seen = {}
    try:
        with Client(args.root) as client:
            while True:
                failed = sweep(client, args.grace, seen)
                if args.once:
                    return 1 if failed else 0
                time.sleep(args.interval)
    except DaemonUnreachable as exc:
        print(exc, file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
