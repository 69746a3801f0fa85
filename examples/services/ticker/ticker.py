#!/usr/bin/env python3
"""ticker: a worker that logs steadily, for the Runyard demo runtime.

Prints ``tick N`` to stdout once per ``--interval`` seconds (default 0.5); every 10th tick also
goes to stderr as a warning, so both log streams have traffic. ``--count N`` stops after N ticks
(0, the default, runs until signalled). SIGTERM or SIGINT stops it cleanly (exit 0).
Dependency-free; ``examples/build_catalog.py`` stamps ``__version__`` when it packs the archive.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from types import FrameType

__version__ = "1.0.0"

WARN_EVERY = 10


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds > 0")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ticker", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--interval", type=positive_seconds, default=0.5, help="seconds between ticks (default 0.5)"
    )
    parser.add_argument(
        "--count",
        type=non_negative_int,
        default=0,
        help="stop after this many ticks (default 0: run until signalled)",
    )
    parser.add_argument("--version", action="version", version=f"ticker {__version__}")
    args = parser.parse_args(argv)

    stop = threading.Event()
    stopped_by: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    start = time.monotonic()
    ticks = 0
    # Ticks are scheduled from the start time, so a slow write does not make the rhythm drift.
    while not stop.wait(max(0.0, start + (ticks + 1) * args.interval - time.monotonic())):
        ticks += 1
        print(f"tick {ticks}", flush=True)
        if ticks % WARN_EVERY == 0:
            print(f"warning: tick {ticks}", file=sys.stderr, flush=True)
        if args.count and ticks >= args.count:
            break
    reason = f" ({stopped_by[0]})" if stopped_by else ""
    print(f"ticker: stopped after {ticks} ticks{reason}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
