"""Runyard's commands in the command palette (ctrl+p): the keys of the screen in front, by the
words of their footer label, and for each service its own start / stop / restart / logs /
details, so an operator who knows a service's name does not need to find its row first.

Actions go through the screen's own ``action_*`` methods, so the palette can do nothing the
keys cannot (read-only mode holds here too: a refused key is left out)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from textual.app import App, SystemCommand
from textual.screen import Screen

if TYPE_CHECKING:
    from .host import ScreenHost

__all__ = ["runyard_commands"]

#: Per-service commands on the services screen: (title, help, what the app does).
SERVICE_COMMANDS = (
    ("Start", "start the service", "act", "start"),
    ("Restart", "restart the service", "act", "restart"),
    ("Stop", "stop the service (no confirmation: you picked it by name)", "act", "stop"),
    ("Logs of", "the service's log, following", "logs", ""),
    ("Details of", "state, why, setup and last stderr lines", "detail", ""),
)


def _key_commands(screen: Screen[Any]) -> Iterable[SystemCommand]:
    """One command per key of the screen (or the app) it allows, by its description; a
    widget's keys (a table's cursor) are not commands."""
    seen: set[str] = set()
    for key, active in screen.active_bindings.items():
        binding = active.binding
        if not isinstance(active.node, (Screen, App)) or not active.enabled:
            continue
        if not binding.description or binding.description in seen:
            continue
        if binding.action in ("app.command_palette", "command_palette"):
            continue
        seen.add(binding.description)
        run: Callable[[], Any] = partial(screen.app.run_action, binding.action, active.node)
        yield SystemCommand(binding.description, f"key {key}", run)


def runyard_commands(
    app: ScreenHost, screen: Screen[Any], services: Iterable[str] = ()
) -> Iterable[SystemCommand]:
    """The keys of ``screen``, then the commands of each of ``services`` (the services
    screen's; none elsewhere)."""
    yield from _key_commands(screen)
    for name in sorted(services):
        for title, help_text, kind, action in SERVICE_COMMANDS:
            if kind == "act" and app.read_only:
                continue
            if kind == "act":
                run: Callable[[], Any] = partial(app.request_action, action, [name])
            elif kind == "logs":
                run = partial(app.open_logs, name)
            else:
                run = partial(app.open_detail, name)
            yield SystemCommand(f"{title} {name}", help_text, run, discover=False)
