"""The banner on top of every screen: what the operator must know before reading the screen.
Hidden when there is nothing to say; one line for each of:

- the daemon is unreachable (the reason follows the fixed words, cut at the screen's edge);
- the terminal is smaller than ``MIN_SIZE`` (the tables and the footer no longer fit);
- the TUI is read-only (``--read-only``: the action keys are off, and not in the footer).

The words carry each fact, so it reads without colour (NO_COLOR) too."""

from __future__ import annotations

from textual.widgets import Static

__all__ = ["MIN_SIZE", "READ_ONLY", "TOO_SMALL", "UNREACHABLE", "Banner"]

UNREACHABLE = "daemon unreachable, retrying"
TOO_SMALL = "terminal too small"
READ_ONLY = "READ-ONLY: watching only, the action keys are off (--read-only)"
#: The smallest terminal the screens are laid out for (columns, rows).
MIN_SIZE = (80, 24)


class Banner(Static):
    DEFAULT_CSS = """
    Banner {
        display: none;
        height: auto;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        background: $error;
        color: $text;
        text-style: bold;
        padding: 0 1;
    }
    Banner.-read-only {
        background: $primary;
    }
    Banner.-small {
        background: $warning;
    }
    Banner.-down {
        background: $error;
    }
    Banner.-shown {
        display: block;
    }
    """

    def on_mount(self) -> None:
        self.watch(self.app, "unreachable", self._show)
        self.watch(self.app, "terminal_size", self._show)

    def _show(self, _: object = None) -> None:
        reason: str = getattr(self.app, "unreachable", "")
        width, height = getattr(self.app, "terminal_size", MIN_SIZE)
        small = width < MIN_SIZE[0] or height < MIN_SIZE[1]
        read_only = bool(getattr(self.app, "read_only", False))
        lines = []
        if reason:
            lines.append(f"{UNREACHABLE}: {reason}")
        if small:
            lines.append(
                f"{TOO_SMALL}: {width}x{height}, Runyard needs {MIN_SIZE[0]}x{MIN_SIZE[1]}"
            )
        if read_only:
            lines.append(READ_ONLY)
        self.set_class(bool(reason), "-down")
        self.set_class(small, "-small")
        self.set_class(read_only, "-read-only")
        self.set_class(bool(lines), "-shown")
        self.update("\n".join(lines))
