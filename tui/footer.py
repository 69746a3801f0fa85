"""The key footer every screen shows: compact, and without the command palette's key, so that a
screen's keys fit 80 columns (the palette still opens with ctrl+p; `?` lists every key)."""

from __future__ import annotations

from textual.widgets import Footer

__all__ = ["KeysFooter"]


class KeysFooter(Footer):
    def __init__(self) -> None:
        super().__init__(compact=True, show_command_palette=False)

    async def recompose(self) -> None:
        """The footer recomposes whenever the bindings change (each screen switch, each help).
        Each compose binds the new keys to ``Footer.compact``, and Textual drops the watcher of
        a removed key only when that reactive changes, which it never does here: the old keys
        would pile up, ~20 widgets a screen switch (a leak in a TUI left open for days).
        Nudging the reactive makes Textual drop them."""
        await super().recompose()
        self.mutate_reactive(Footer.compact)
