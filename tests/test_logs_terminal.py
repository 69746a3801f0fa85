"""Finding: `runyard logs` printed a service's lines raw, so escape sequences the service itself
wrote (a window title, a screen clear, cursor moves, an OSC 52 clipboard write, an 8-bit CSI)
reached the operator's terminal and were obeyed; `runyard status` did the same with a service's
sd_notify STATUS= text. They are printed escaped now; `--color` keeps colours, `--raw` the
text as written, `--json` stays exact."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from daemonkit import build_tree, runyard_env, wait_for
from hypothesis import given
from hypothesis import strategies as st

from runyard.daemon.cli.log_text import Render, for_terminal, json_for_terminal

pytestmark = pytest.mark.timeout(120)

#: What a hostile (or merely careless) service prints: tab, OSC title, clear + home, OSC 52
#: clipboard write, colour, an 8-bit CSI cursor move, DEL, a carriage return, a bell.
HOSTILE = (
    "a\tb \x1b]0;pwned\x07 \x1b[2J\x1b[H \x1b]52;c;cHduZWQ=\x07 "
    "\x1b[31mred\x1b[0m \x9b1A \x7f x\ry \x07end"
)

#: Prints HOSTILE at start, then a numbered hostile line every 0.1 s (for `logs -f`); says the
#: same hostile text as its sd_notify STATUS=.
SERVICE = f"""
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
HOSTILE = {HOSTILE!r}
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.sendto(("READY=1\\nSTATUS=" + HOSTILE).encode(), os.environ["NOTIFY_SOCKET"])
sys.stdout.buffer.write(HOSTILE.encode() + b"\\n")
sys.stdout.flush()
n = 0
while True:
    time.sleep(0.1)
    n += 1
    sys.stdout.buffer.write(f"tick {{n}} \\x1b]0;again\\x07".encode() + b"\\n")
    sys.stdout.flush()
"""

#: What a terminal would act on: C0 but tab and newline, DEL, C1.
OBEYED = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
SGR = re.compile(r"\x1b\[[0-9;:]*m")


def runyard(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "runyard.daemon", *args],
        cwd=cwd,
        env=runyard_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.decode()


@pytest.fixture
def hostile(root, daemons) -> Path:
    tree = build_tree(root, {"loud": SERVICE}, "[services.loud]\nnotify = true\nstart_secs = 0\n")
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: c.status(["loud"]).services[0].ready, what="loud ready")
        wait_for(
            lambda: any(line.line == HOSTILE for line in c.logs_tail("loud", n=1000).lines),
            what="the hostile line in the ring",
        )
    return root.parent


def _first(text: str) -> str:
    """The hostile line of ``runyard logs`` output (its first line)."""
    return text.split("\n")[0]


def test_logs_prints_a_services_escape_sequences_inert(hostile: Path) -> None:
    line = _first(runyard(hostile, "logs", "loud", "-n", "1000"))
    assert not OBEYED.search(line), repr(line)
    # Shown, not hidden: the operator sees what the service tried; tabs kept, colours dropped.
    assert line.endswith(
        "out a\tb \\x1b]0;pwned\\x07 \\x1b[2J\\x1b[H \\x1b]52;c;cHduZWQ=\\x07 "
        "red \\x9b1A \\x7f x\\ry \\x07end"
    ), repr(line)


def test_logs_color_keeps_only_colour_codes(hostile: Path) -> None:
    line = _first(runyard(hostile, "logs", "loud", "-n", "1000", "--color"))
    assert "\x1b[31mred\x1b[0m" in line and line.endswith("\\x07end\x1b[0m"), repr(line)
    assert not OBEYED.search(SGR.sub("", line)), repr(line)


def test_logs_raw_and_json_keep_the_text_exact(hostile: Path) -> None:
    raw = _first(runyard(hostile, "logs", "loud", "-n", "1000", "--raw"))
    assert raw.endswith(" out " + HOSTILE), repr(raw)
    first = runyard(hostile, "logs", "loud", "-n", "1000", "--json").split("\n")[0]
    assert not OBEYED.search(first)  # C0 escaped by JSON, DEL and C1 by us
    assert json.loads(first)[3] == HOSTILE


def test_logs_follow_prints_new_lines_inert(hostile: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runyard.daemon", "logs", "loud", "-n", "0", "-f"],
        cwd=hostile,
        env=runyard_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()  # the service prints every 0.1 s
        assert re.search(r"out tick \d+ \\x1b\]0;again\\x07\n$", line), repr(line)
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_status_prints_a_services_status_text_inert(hostile: Path) -> None:
    table = runyard(hostile, "status", "loud")
    assert not OBEYED.search(table), repr(table)
    assert "\\x1b]0;pwned\\x07" in table


@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_nothing_a_terminal_obeys_survives(text: str) -> None:
    assert not OBEYED.search(for_terminal(text).replace("\n", ""))
    assert not OBEYED.search(SGR.sub("", for_terminal(text, Render.COLOR)))
    assert for_terminal(text, Render.RAW) == text


@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"))))
def test_json_for_terminal_is_the_same_json(value: list[str]) -> None:
    text = json_for_terminal(json.dumps(value, ensure_ascii=False))
    assert not OBEYED.search(text) and json.loads(text) == value


def test_escaping_keeps_a_printable_line_and_its_tabs() -> None:
    assert for_terminal("plain\ttext é ✓") == "plain\ttext é ✓"
    # A colour sequence cannot be completed by what follows it: \x1b[3 then \x1b... stays text.
    assert for_terminal("\x1b[3\x1b[1mB", Render.COLOR) == "\\x1b[3\x1b[1mB\x1b[0m"
