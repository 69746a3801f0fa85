"""``ScreenHost``: what a screen asks of the app that hosts it.

Screens read the app's bridge and its read-only flag, open other screens and request actions.
Typed against this Protocol rather than ``RunyardApp``, a screen does not import app.py, so the
only arrow between them is app.py -> screens (no import cycle, and a screen can be tested
inside any App that offers these).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .bridge import Bridge

__all__ = ["ScreenHost"]


class ScreenHost(Protocol):
    bridge: Bridge
    #: The runtime tree's root (the logs' save dialog offers its temp/).
    root: Path
    read_only: bool
    #: Seconds since the epoch, now.
    clock: Callable[[], float]

    def open_logs(self, service: str) -> None:
        """The logs screen of ``service``, or of every service (bridge.ALL_LOGS)."""

    def open_disk(self) -> None: ...

    def open_runs(self) -> None: ...

    def request_action(self, action: str, services: list[str]) -> None:
        """start / stop / restart / reload ``services``, answered by a notification."""

    def open_detail(self, service: str) -> None:
        """The details of ``service`` on a screen of their own."""

    def show_details(self) -> None:
        """Refresh every details pane from the services as the app knows them."""

    def services_shown(self) -> None:
        """The services table is there: give it what the daemon said before it was."""

    def request_ensure(self, name: str, version_spec: str, catalog: str | None = None) -> None:
        """Install ``name`` at ``version_spec`` (from ``catalog``; None: the last one used) in
        the background, answered by a notification."""
