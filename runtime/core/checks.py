"""One named check of a verification (a sealed run's or a runtime bundle's), as reports list them."""

from __future__ import annotations

import msgspec

__all__ = ["Check"]


class Check(msgspec.Struct):
    """One verification check. ``detail`` names the file and what is wrong (or what passed)."""

    name: str
    ok: bool
    detail: str
    skipped: bool = False
