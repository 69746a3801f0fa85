"""The connection banner: hidden while the daemon answers, one red line while it does not
(the reason follows the fixed words, cut at the screen's edge)."""

from __future__ import annotations

from textual.widgets import Static

__all__ = ["UNREACHABLE", "Banner"]

UNREACHABLE = "daemon unreachable, retrying"


class Banner(Static):
    DEFAULT_CSS = """
    Banner {
        display: none;
        height: 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        background: $error;
        color: $text;
        text-style: bold;
        padding: 0 1;
    }
    Banner.-down {
        display: block;
    }
    """

    def on_mount(self) -> None:
        self.watch(self.app, "unreachable", self._show)

    def _show(self, reason: str) -> None:
        self.set_class(bool(reason), "-down")
        if reason:
            self.update(f"{UNREACHABLE}: {reason}")
