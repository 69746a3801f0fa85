#!/usr/bin/env python3
"""Wait until services are running and ready: an example of snapshot-then-subscribe events.

Uses only the client library: ``client.events`` subscribes, then takes a ``status`` snapshot,
so no state change between the two is lost. A service without a readiness probe counts as ready
once running. Run it with the Python that has runyard installed.

Exit codes: 0 all ready, 1 timed out (the ones not ready are printed), 2 usage or unknown
service, 3 daemon unreachable.
"""

from __future__ import annotations

import sys
import time
from argparse import ArgumentParser, RawDescriptionHelpFormatter

from runyard.protocol.client import Client, DaemonUnreachable
from runyard.protocol.messages import ServiceStatus, StateEvent


def is_ready(s: ServiceStatus) -> bool:
    return s.state == "running" and s.ready is not False


def describe(s: ServiceStatus) -> str:
    detail = f", not ready: {s.ready_detail}" if s.state == "running" else ""
    return f"{s.name} ({s.state}{detail})"


def main() -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("services", nargs="+", metavar="SVC")
    parser.add_argument("--root", help="runtime tree (default: RUNYARD_ROOT, ./runtime, ...)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    try:
        topics = [f"state.{name}" for name in args.services]
        with Client(args.root) as client, client.events(topics) as events:
            known = {s.name: s for s in events.snapshot.services}
            unknown = [name for name in args.services if name not in known]
            if unknown:
                print(f"no such service: {', '.join(unknown)}", file=sys.stderr)
                return 2
            wanted = {name: known[name] for name in args.services}
            while not all(is_ready(s) for s in wanted.values()):
                left = deadline - time.monotonic()
                event = events.get(left) if left > 0 else None
                if event is None:
                    waiting = [describe(s) for s in wanted.values() if not is_ready(s)]
                    print(f"not ready after {args.timeout:g}s: {'; '.join(waiting)}")
                    return 1
                # Prefix subscriptions: "state.web" also brings "state.web2".
                if isinstance(event, StateEvent) and event.service.name in wanted:
                    wanted[event.service.name] = event.service
    except DaemonUnreachable as exc:
        print(exc, file=sys.stderr)
        return 3
    print(f"ready: {', '.join(args.services)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
