"""CPU and RSS over the last minutes as text sparklines (``▁▂▃▄▅▆▇█``), for the details pane.

The daemon keeps 90 samples a service (one every 2 s: three minutes) and the ``stats`` request
returns them. A sparkline has one cell per ``BUCKET`` samples (the largest of them, so a short
spike shows), scaled from zero to the largest value shown; a cell with no sample (the service
had no process then) is a space. Block characters, not colours: they read under NO_COLOR too.
"""

from __future__ import annotations

from collections.abc import Sequence

from runyard.protocol.payloads import StatSample
from runyard.runtime.core.sizes import ByteStyle, format_bytes

__all__ = ["BARS", "sparkline", "stats_rows"]

BARS = "▁▂▃▄▅▆▇█"
#: Cells of a sparkline at most, and samples a cell stands for (3: 6 s; 30 cells: 3 minutes).
CELLS = 30
BUCKET = 3


def sparkline(values: Sequence[float | None], top: float | None = None) -> str:
    """One bar per value, from ``▁`` (zero) to ``█`` (``top``, default the largest); None is
    a space."""
    known = [v for v in values if v is not None]
    top = max(known, default=0.0) if top is None else top
    out = []
    for value in values:
        if value is None:
            out.append(" ")
        elif top <= 0:
            out.append(BARS[0])
        else:
            out.append(BARS[min(len(BARS) - 1, int(value / top * (len(BARS) - 1) + 0.5))])
    return "".join(out)


def _buckets(samples: Sequence[StatSample], field: str) -> list[float | None]:
    values = [float(getattr(s, field)) for s in samples[-CELLS * BUCKET :]]
    return [max(values[i : i + BUCKET]) for i in range(0, len(values), BUCKET)]


def stats_rows(samples: Sequence[StatSample]) -> list[tuple[str, str]]:
    """(label, value) rows: ``cpu`` and ``rss`` sparklines with the latest and the peak, and
    the minutes they cover; none without samples."""
    if not samples:
        return []
    minutes = max(1, round((samples[-1].ts - samples[0].ts) / 60)) if len(samples) > 1 else 0
    span = f"last {minutes} min" if minutes else "just started"
    cpu = _buckets(samples, "cpu_percent")
    rss = _buckets(samples, "rss")
    peak_cpu = max(s.cpu_percent for s in samples)
    peak_rss = max(s.rss for s in samples)
    now_rss = format_bytes(samples[-1].rss, ByteStyle.TENTHS)
    return [
        ("cpu", f"{sparkline(cpu, max(peak_cpu, 1.0))} {samples[-1].cpu_percent:.1f}%"),
        ("", f"peak {peak_cpu:.1f}%, {span}"),
        ("rss", f"{sparkline(rss)} {now_rss}"),
        ("", f"peak {format_bytes(peak_rss, ByteStyle.TENTHS)}"),
    ]
