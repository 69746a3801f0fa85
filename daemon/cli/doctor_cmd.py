"""``runyard doctor``: (being built)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Not registered yet: the command is being built."""
