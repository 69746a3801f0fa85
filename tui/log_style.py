"""How one log line looks: timestamp, service tag, stream marker, text, search highlights.

A tag's colour is picked by a stable hash of the service's name (the same service, the same
colour); no red or magenta, which would read as stderr. Under NO_COLOR (``mono``) Textual
turns colours into greys of the same luminance, which made red stderr dark grey on dark grey:
there stderr is a reversed ``err│`` marker and bold text, and tags are bold."""

from __future__ import annotations

import zlib
from datetime import datetime

from rich.style import Style
from rich.text import Text

from .log_rings import Shown

__all__ = ["TAG_STYLES", "styled_line", "tag_style"]

TAG_STYLES = (
    "bold cyan",
    "bold green",
    "bold blue",
    "bold yellow",
    "bold bright_cyan",
    "bold bright_green",
    "bold bright_blue",
    "bold bright_yellow",
)


def tag_style(service: str) -> str:
    return TAG_STYLES[zlib.crc32(service.encode()) % len(TAG_STYLES)]


def styled_line(
    shown: Shown,
    base: Style,
    timestamps: bool,
    tag: str | None,
    mono: bool,
    query: str,
    *,
    current: bool = False,
) -> Text:
    """``shown`` as one row; ``tag``: its service's name padded (None: no tag); ``current``:
    it holds the search match the view is on."""
    line = shown.line
    text = Text(style=base, no_wrap=True, end="")
    if timestamps:
        stamp = datetime.fromtimestamp(line.ts).strftime("%H:%M:%S.%f")[:-3]
        text.append(stamp + " ", style="dim")
    if tag is not None:
        text.append(tag + " ", style="bold" if mono else tag_style(shown.service))
    if line.stream in ("err", "stderr"):
        text.append("err│", style="bold reverse" if mono else "bold red")
        text.append(shown.text, style="bold" if mono else "red")
    else:
        text.append("out│", style="dim")
        text.append(shown.text)
    if query:
        text.highlight_words(
            [query], style="black on yellow" if current else "reverse", case_sensitive=False
        )
    return text
