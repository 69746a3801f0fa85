"""`runyard tui` in tmux at 80x24 (issue 15): the details screen of a service, and NO_COLOR
that keeps fatal and stderr readable. The contrast is measured on what tmux holds: the SGR
sequences of each cell, turned into colours and a WCAG contrast ratio."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import require_tool
from daemonkit import Daemon, build_tree
from test_tui_tmux import Tmux, service_row, until
from test_tui_why import CRASHER, GRUMBLER

_SGR = re.compile(r"\x1b\[([0-9;:]*)m")
_OTHER = re.compile(r"\x1b[^\[]|\x1b\[[0-9;?]*[A-Za-ln-z]")
#: What a terminal shows for "default" (tmux's own defaults on a dark terminal).
DEFAULT_FG, DEFAULT_BG = (229, 229, 229), (0, 0, 0)
_BASIC = [
    (0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0),
    (0, 0, 238), (205, 0, 205), (0, 205, 205), (229, 229, 229),
    (127, 127, 127), (255, 0, 0), (0, 255, 0), (255, 255, 0),
    (92, 92, 255), (255, 0, 255), (0, 255, 255), (255, 255, 255),
]  # fmt: skip


def xterm(n: int) -> tuple[int, int, int]:
    if n < 16:
        return _BASIC[n]
    if n >= 232:
        level = 8 + 10 * (n - 232)
        return (level, level, level)
    n -= 16
    steps = (0, 95, 135, 175, 215, 255)
    return (steps[n // 36], steps[n // 6 % 6], steps[n % 6])


def _colour(params: list[int], i: int) -> tuple[tuple[int, int, int], int]:
    """The colour of ``38;5;N`` / ``38;2;R;G;B`` at params[i] (the 5 or the 2), and the index
    after it."""
    if params[i] == 5:
        return xterm(params[i + 1]), i + 2
    return (params[i + 1], params[i + 2], params[i + 3]), i + 4


class Cell(dict):  # type: ignore[type-arg]
    pass


def styled_cells(line: str) -> list[tuple[str, dict[str, object]]]:
    """Each printed character of a ``capture-pane -e`` line with its fg, bg, dim, reverse."""
    state: dict[str, object] = {"fg": None, "bg": None, "dim": False, "reverse": False}
    out = []
    pos = 0
    line = _OTHER.sub("", line)
    for m in _SGR.finditer(line + "\x1b[m"):
        out += [(ch, dict(state)) for ch in line[pos : m.start()]]
        pos = m.end()
        params = [int(p) if p else 0 for p in re.split("[;:]", m.group(1))] or [0]
        i = 0
        while i < len(params):
            p = params[i]
            i += 1
            if p == 0:
                state.update(fg=None, bg=None, dim=False, reverse=False)
            elif p == 2:
                state["dim"] = True
            elif p == 22:
                state["dim"] = False
            elif p == 7:
                state["reverse"] = True
            elif p == 27:
                state["reverse"] = False
            elif p in (38, 48):
                colour, i = _colour(params, i)
                state["fg" if p == 38 else "bg"] = colour
            elif p == 39:
                state["fg"] = None
            elif p == 49:
                state["bg"] = None
            elif 30 <= p <= 37 or 90 <= p <= 97:
                state["fg"] = _BASIC[p - 30 if p < 90 else p - 82]
            elif 40 <= p <= 47 or 100 <= p <= 107:
                state["bg"] = _BASIC[p - 40 if p < 100 else p - 92]
    return out


def _luminance(rgb: tuple[int, int, int]) -> float:
    def channel(c: int) -> float:
        x = c / 255
        return x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(style: dict[str, object]) -> float:
    fg = style["fg"] or DEFAULT_FG
    bg = style["bg"] or DEFAULT_BG
    if style["dim"]:  # terminals draw dim halfway to the background
        fg = tuple((a + b) // 2 for a, b in zip(fg, bg, strict=True))  # type: ignore[arg-type]
    if style["reverse"]:
        fg, bg = bg, fg
    hi, lo = sorted((_luminance(fg), _luminance(bg)), reverse=True)  # type: ignore[arg-type]
    return (hi + 0.05) / (lo + 0.05)


def contrast_of(screen: str, word: str) -> float:
    """The worst contrast over the characters of ``word``'s first appearance on ``screen``."""
    for line in screen.splitlines():
        cells = styled_cells(line)
        text = "".join(ch for ch, _ in cells)
        at = text.find(word)
        if at >= 0:
            return min(contrast(style) for _, style in cells[at : at + len(word)])
    raise AssertionError(f"{word!r} not on the screen")


def plain(screen: str) -> str:
    return "\n".join("".join(ch for ch, _ in styled_cells(x)) for x in screen.splitlines())


@pytest.mark.timeout(60)
def test_no_color_keeps_fatal_and_stderr_readable_and_details_fit_80x24(root: Path) -> None:
    """Findings: NO_COLOR=1 turned `fatal` and stderr lines into dark grey on dark grey
    (~1.3:1); and what to build: the details of a service on an 80x24 screen."""
    tmux = Tmux(require_tool("tmux"), root.parent)
    project = """
    [services.crash]
    restart = "always"
    max_restarts = 1
    start_secs = 0.2
    backoff = { initial = 0.1, multiplier = 1.0, max = 0.1, jitter = 0.0 }
    """
    tree = build_tree(root, {"crash": CRASHER, "grumbler": GRUMBLER}, project)
    daemon = Daemon(tree)
    try:
        daemon.start()
        argv = f"env NO_COLOR=1 {sys.executable} -m runyard.daemon tui --root {tree.root}"
        tmux.start(argv, cwd=tree.root.parent)
        colours = ["capture-pane", "-p", "-e", "-t", tmux.session]

        def shown(cond: Callable[[str], bool], what: str) -> str:
            """The screen with its colours, once its text satisfies ``cond``."""
            deadline = time.monotonic() + 20
            screen = ""
            while time.monotonic() < deadline:
                screen = tmux.run(*colours, check=False).stdout
                if cond(plain(screen)):
                    return screen
                time.sleep(0.1)
            raise AssertionError(f"timed out waiting for {what}; screen:\n{plain(screen)}")

        screen = shown(lambda s: "fatal" in service_row(s, "crash"), "crash shown fatal")
        assert contrast_of(screen, "fatal") >= 4.5, plain(screen)

        # The cursor starts on crash; the next row is grumbler. Its details, on a screen.
        tmux.keys("Down")
        until(tmux, lambda s: "grumbler: running" in s, "the why line of grumbler")
        tmux.keys("i")
        text = until(tmux, lambda s: "complaint 6" in s, "grumbler's details")
        assert "state      running" in text and "needs" in text, text
        assert re.search(r"bin +\S+/grumbler", text), text
        tmux.keys("End")  # 20 stderr lines and the facts are more than 24 rows: scroll
        screen = shown(lambda s: "complaint 25" in s, "the last stderr line")
        assert all(len(line) <= 80 for line in plain(screen).splitlines())
        assert contrast_of(screen, "complaint 25") >= 4.5, plain(screen)
        tmux.keys("Escape")
        until(tmux, lambda s: "fatal" in service_row(s, "crash"), "back on the services")

        # Its log: the stderr lines at full contrast, marker and text.
        tmux.keys("Enter")
        screen = shown(lambda s: "logs: grumbler" in s and "err│" in s, "grumbler's log")
        assert contrast_of(screen, "err│") >= 4.5, plain(screen)
        assert contrast_of(screen, "complaint") >= 4.5, plain(screen)
        tmux.keys("q")
        deadline = time.monotonic() + 15
        while tmux.alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"the TUI did not exit on q; screen:\n{tmux.screen()}")
            time.sleep(0.1)
    finally:
        tmux.kill()
        daemon.stop()


def test_the_contrast_measure_tells_grey_on_grey_from_reverse() -> None:
    """The measure itself: what NO_COLOR drew before (grey 237 on 235) fails, reverse passes."""
    before = "\x1b[1m\x1b[38;5;237m\x1b[48;5;235mfatal\x1b[0m"
    after = "\x1b[38;5;253m\x1b[48;5;235m\x1b[1;7mfatal\x1b[0m"
    assert contrast_of(before, "fatal") < 1.5
    assert contrast_of(after, "fatal") > 7
