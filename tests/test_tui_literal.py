"""Text from services and runs is shown as itself in the TUI, whatever brackets it holds."""

from __future__ import annotations

import pytest
from textual.markup import to_content

from runyard.protocol.payloads import ReplayReport
from runyard.tui.literal import literal
from runyard.tui.runs_screen import replay_lines

TRICKY = ["[5", "queue [5 items", "[@click=app.quit]", "a [b] c", "[bold", "a\\", "a\\[b]", "x[/]"]


@pytest.mark.parametrize("text", TRICKY)
def test_literal_text_inside_tags_comes_out_as_itself(text: str) -> None:
    shown = str(to_content(f"[b]x[/b] [dim]{literal(text)}[/dim] end"))
    assert shown.removesuffix(" end").rstrip() == f"x {text}".rstrip()


def test_a_replay_report_with_brackets_renders() -> None:
    """Review finding: the runs panel used Rich's escape, which Textual's parser does not
    honour for an unclosed ``[``: ``original: [5`` inside [dim] swallowed the tags."""
    report = ReplayReport(
        replayable=False, reason="bytes differ [5", differences=["$.a[5"], replay_id="r[1"
    )
    for line in replay_lines("run[5", report):
        to_content(line)  # raises MarkupError on a broken line
    text = " ".join(str(to_content(line)) for line in replay_lines("run[5", report))
    assert "run[5" in text and "bytes differ [5" in text
