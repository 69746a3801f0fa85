"""`runyard tui` driven in tmux as a person over SSH would: keys in, screen text out."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import require_tool
from daemonkit import SLEEPER, Daemon, build_tree

from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree


class Tmux:
    """A private tmux server (its own -L socket, no user config) holding one 80x24 session."""

    def __init__(self, tmux: str, tmpdir: Path) -> None:
        self.argv = [tmux, "-L", f"ry-test-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
        self.session = "ry"
        # The socket lives under TMUX_TMPDIR: a private, short directory removed after the test.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNYARD_", "TMUX"))}
        self.env["TMUX_TMPDIR"] = str(tmpdir)
        self.env["TERM"] = "xterm-256color"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.argv, *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=10,
        )

    def start(self, command: str, cwd: Path) -> None:
        size = ["-x", "80", "-y", "24"]
        self.run("new-session", "-d", "-s", self.session, *size, "-c", str(cwd), command)

    def screen(self) -> str:
        done = self.run("capture-pane", "-p", "-t", self.session, check=False)
        return done.stdout if done.returncode == 0 else ""

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def alive(self) -> bool:
        return self.run("has-session", "-t", self.session, check=False).returncode == 0

    def kill(self) -> None:
        self.run("kill-server", check=False)


def until(tmux: Tmux, cond: Callable[[str], bool], what: str, timeout: float = 20.0) -> str:
    """Poll the screen until cond(screen) holds; fail with the last screen shown."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux.screen()
        if cond(screen):
            return screen
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; screen:\n{screen}")


def service_row(screen: str, name: str) -> str:
    return next((line for line in screen.splitlines() if name in line), "")


@pytest.mark.timeout(60)
def test_tui_in_tmux_shows_services_logs_and_quits(root: Path) -> None:
    tmux = Tmux(require_tool("tmux"), root.parent)
    tree = build_tree(root, {"alpha": SLEEPER, "beta": SLEEPER})
    daemon = Daemon(tree)
    try:
        daemon.start()
        tmux.start(
            f"{sys.executable} -m runyard.daemon tui --root {tree.root}", cwd=tree.root.parent
        )

        until(
            tmux,
            lambda s: all("running" in service_row(s, name) for name in ("alpha", "beta")),
            "alpha and beta shown running",
        )

        # The cursor starts on the first row (alpha); enter opens its logs.
        tmux.keys("Enter")
        until(
            tmux,
            lambda s: "logs: alpha" in s and "sleeper up" in s,
            "alpha's 'sleeper up' line in its log view",
        )

        tmux.keys("Escape")
        until(tmux, lambda s: "beta" in s and "sleeper up" not in s, "back on the services")
        tmux.keys("q")
        deadline = time.monotonic() + 15
        while tmux.alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"the TUI did not exit on q; screen:\n{tmux.screen()}")
            time.sleep(0.1)
    finally:
        tmux.kill()
        daemon.stop()


@pytest.mark.timeout(60)
def test_logs_warn_sets_the_disk_panel_threshold(root: Path) -> None:
    tmux = Tmux(require_tool("tmux"), root.parent)
    tree = build_tree(root, {"alpha": SLEEPER})
    daemon = Daemon(tree)
    try:
        daemon.start()
        argv = f"{sys.executable} -m runyard.daemon tui --root {tree.root} --logs-warn 1MiB"
        tmux.start(argv, cwd=tree.root.parent)
        until(tmux, lambda s: "running" in service_row(s, "alpha"), "alpha shown running")
        tmux.keys("d")
        until(tmux, lambda s: "logs over 1.0M" in s, "the disk panel's 1 MiB threshold")
        tmux.keys("Escape")
        until(tmux, lambda s: "running" in service_row(s, "alpha"), "back on the services")
        tmux.keys("q")
        deadline = time.monotonic() + 15
        while tmux.alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"the TUI did not exit on q; screen:\n{tmux.screen()}")
            time.sleep(0.1)
    finally:
        tmux.kill()
        daemon.stop()


@pytest.mark.parametrize("size", ["12X", "", "-5", "1.2.3M"])
def test_a_bad_logs_warn_is_a_one_line_usage_error(size: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runyard.daemon",
            "tui",
            "--root",
            str(tmp_path),
            "--logs-warn",
            size,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("runyard: --logs-warn: ")


@pytest.mark.timeout(30)
def test_tui_without_a_terminal_refuses_with_one_line_and_exit_2(tmp_path: Path) -> None:
    """`runyard tui </dev/null` (cron, nohup, ssh -n) used to spin at 100% CPU forever."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    argv = [sys.executable, "-m", "runyard.daemon", "tui", "--root", str(tmp_path)]
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=20, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert "needs a terminal" in done.stderr and "stdin" in done.stderr


@pytest.mark.timeout(60)
def test_tui_starts_beside_a_broken_project_file(tmp_path: Path) -> None:
    """Was: a syntax error in ./runyard.toml refused `runyard tui` (a read, as status is)."""
    init_tree(RuntimeTree(tmp_path / "rt"))
    (tmp_path / "runyard.toml").write_text('root = "rt"\n[services.web\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env["TERM"] = "xterm-256color"
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runyard.daemon", "tui", "--read-only"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 40
        while b"\x1b[?1049h" not in seen and time.monotonic() < deadline:  # the TUI's screen
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child exited: EIO on the master
                break
            if not chunk:
                break
            seen += chunk
        assert b"\x1b[?1049h" in seen, seen.decode(errors="replace")
        assert b"runyard: warning: " in seen and b"line 2" in seen
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
