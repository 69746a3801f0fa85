"""Byte counts written for people: the one formatter, for every layer (CLI, TUI, messages).

Units are binary (1 KiB = 1024 bytes). The style says who reads the number, and the styles differ
on purpose:

    ByteStyle.IEC       "0 B", "512 B", "1.5 KiB", "2.0 GiB"   CLI tables and CLI lines
    ByteStyle.PROSE     "512 bytes", "1.5 KiB"                  inside a sentence (error messages)
    ByteStyle.COMPACT   "0B", "512B", "1.5K", "34M", "1.2G"     TUI columns: at most 6 characters
                                                                 below 100,000 TiB (one decimal
                                                                 under 10, none from 10)
    ByteStyle.TENTHS    "0B", "512B", "23.0M", "150.0M"          the TUI services table's RSS
                                                                 column: always one decimal

TENTHS is COMPACT with a fixed decimal; the services table has shown RSS that way since it was
written and its snapshots pin it. Every style stops at TiB (a larger count is shown in TiB).
The parsing side (``500M``, ``100MiB``) is the CLI's ``parse_bytes``.
"""

from __future__ import annotations

import enum

__all__ = ["ByteStyle", "format_bytes"]


class ByteStyle(enum.Enum):
    IEC = "iec"
    PROSE = "prose"
    COMPACT = "compact"
    TENTHS = "tenths"


_STEPS = ("", "Ki", "Mi", "Gi", "Ti")


def format_bytes(n: int, style: ByteStyle = ByteStyle.IEC) -> str:
    """``n`` bytes as ``style`` writes them (see the module doc)."""
    value = float(n)
    step = 0
    while value >= 1024 and step < len(_STEPS) - 1:
        value /= 1024
        step += 1
    if step == 0:
        match style:
            case ByteStyle.IEC:
                return f"{n} B"
            case ByteStyle.PROSE:
                return f"{n} bytes"
            case ByteStyle.COMPACT | ByteStyle.TENTHS:
                return f"{n}B"
    match style:
        case ByteStyle.IEC | ByteStyle.PROSE:
            return f"{value:.1f} {_STEPS[step]}B"
        case ByteStyle.COMPACT:
            letter = _STEPS[step][0]
            return f"{value:.1f}{letter}" if value < 10 else f"{value:.0f}{letter}"
        case ByteStyle.TENTHS:
            return f"{value:.1f}{_STEPS[step][0]}"
    raise AssertionError(f"unknown byte style {style!r}")
