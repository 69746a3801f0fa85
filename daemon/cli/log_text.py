"""A service's text as the CLI prints it: what a service wrote must never drive the operator's
terminal.

A line a service prints may hold escape sequences: a window title (``ESC ] 0 ; ... BEL``), a
screen clear (``ESC [ 2 J``), cursor moves, an OSC 52 clipboard write, an 8-bit CSI (U+009B). Written
raw by ``runyard logs`` they would be obeyed by the terminal of whoever reads the logs, as
``kubectl logs`` and ``docker logs`` let them be. We print them as journalctl does, visibly and
inert: every C0 control but tab, DEL and every C1 control becomes its Python escape (``\\x1b``,
``\\r``), so the line stays one line, shows what the service tried, and greps the same piped or
not. SGR colour sequences (``ESC [ 31 m``) are presentation, not content: dropped by default as
the TUI drops them, kept with ``--color``. ``--raw`` prints the text as the daemon holds it
(for pipes that want the bytes). ``--json`` is exact: JSON escapes C0 itself, and
``json_for_terminal`` writes DEL and C1, which JSON may leave bare, as ``\\u009b``: the same
value to a parser, inert on a terminal.
"""

from __future__ import annotations

import re
from enum import Enum

__all__ = ["Render", "for_terminal", "json_for_terminal"]


class Render(Enum):
    """How a service's text reaches stdout."""

    SAFE = "safe"  # controls escaped, colours dropped (the default)
    COLOR = "color"  # controls escaped, complete SGR colour sequences kept
    RAW = "raw"  # as the daemon holds it


#: A complete SGR sequence: CSI, parameters (digits, ``;``, ``:``), ``m``. Nothing else in it,
#: so a kept one can only set colours and attributes.
_SGR = re.compile(r"\x1b\[[0-9;:]*m")
#: Every character a terminal may act on: C0 but tab, DEL, C1.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r"}
#: What JSON may leave unescaped and a terminal would still obey.
_JSON_BARE = re.compile(r"[\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or f"\\x{ord(char):02x}"


def _escape_all(text: str) -> str:
    return _CONTROL.sub(_escape, text)


def for_terminal(text: str, render: Render = Render.SAFE) -> str:
    """``text`` with nothing in it a terminal would obey, unless ``render`` is RAW."""
    if render is Render.RAW or text.isprintable():
        return text
    if render is Render.COLOR:
        # Escape around the kept sequences, so no other control can join one of them.
        kept = _SGR.split(text)
        sgrs = _SGR.findall(text)
        out = [_escape_all(kept[0])]
        for sgr, after in zip(sgrs, kept[1:], strict=True):
            out += [sgr, _escape_all(after)]
        # A colour left on would paint the lines after this one (another service's too).
        return "".join(out) + ("\x1b[0m" if sgrs else "")
    return _escape_all(_SGR.sub("", text))


def json_for_terminal(encoded: str) -> str:
    """JSON text with DEL and C1 escaped; they can only stand inside its strings."""
    return _JSON_BARE.sub(lambda m: f"\\u{ord(m.group()):04x}", encoded)
