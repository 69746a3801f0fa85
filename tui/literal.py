"""Text from a service or a run shown as itself, never read as Textual markup."""

from __future__ import annotations

__all__ = ["literal"]


def literal(text: str) -> str:
    """``text`` as literal Textual markup. Rich's ``escape`` is not enough for Textual's parser:
    an unclosed ``[`` with a digit after it (``queue [5 items``) swallowed the tags around it,
    and an unclosed one raised MarkupError, which ended the app. A backslash escapes only a
    ``[`` after it: a trailing one would escape the closing tag that follows, so it gets a
    space after it."""
    return text.replace("[", "\\[") + (" " if text.endswith("\\") else "")
