"""scripts/demo's own shell (issue 15): no ANSI codes into a pipe or a log, and hello-http on a
free port when 18080 is held by something else. The pieces of the script run as written (cut
out of it by their first and last lines), not the whole demo."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = (REPO / "scripts" / "demo").read_text()


def _piece(first: str, last: str) -> str:
    """The lines of scripts/demo from the one starting with ``first`` to the next starting with
    ``last``, both included."""
    lines = DEMO.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(last))
    return "\n".join(lines[start : end + 1]) + "\n"


def _bash(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )


def test_demo_headings_carry_no_ansi_codes_into_a_pipe() -> None:
    out = _bash(_piece("if [ -t 1 ]", "fi") + 'step "hello"\n').stdout
    assert out == "\n== hello\n", repr(out)
    assert "\x1b" not in out


@pytest.mark.timeout(30)
def test_demo_takes_a_free_port_when_18080_is_busy(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", 18080))
    except OSError:
        holder.close()
        pytest.skip("127.0.0.1:18080 is held by another process (a demo?): cannot hold it here")
    holder.listen()
    try:
        script = _piece('port="$(cat', 'echo "$port"') + 'echo "chose $port"\n'
        demo = tmp_path / ".demo"
        demo.mkdir()
        out = _bash(script, repo=str(REPO), demo=str(demo))
    finally:
        holder.close()
    chosen = int(out.stdout.split()[-1])
    assert chosen != 18080
    assert (demo / "port").read_text().strip() == str(chosen)
    with socket.socket() as probe:  # and it was free
        probe.bind(("127.0.0.1", chosen))
