"""The test sshd helper itself (tests/sshbox.py): login with the throwaway key, strict host key
checking, the remote PATH finding this runyard, sessions killed while sshd keeps listening."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sshbox import SshBox, require_sshd, sshbox  # noqa: F401  (sshbox: the fixture)


@pytest.mark.timeout(60)
def test_sshbox_runs_runyard_and_survives_killed_sessions(sshbox: SshBox) -> None:  # noqa: F811
    r = subprocess.run(sshbox.ssh("command -v runyard"), capture_output=True, text=True, check=True)
    assert r.stdout.strip() == str(Path(sys.executable).parent / "runyard")
    held = subprocess.Popen(
        sshbox.ssh("echo up; exec sleep 60"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    try:
        assert held.stdout is not None and held.stdout.readline() == b"up\n"
        assert sshbox.kill_sessions()
        assert held.wait(timeout=15) != 0
    finally:
        held.kill()
        held.wait()
    again = subprocess.run(sshbox.ssh("echo", "ok"), capture_output=True, text=True, check=True)
    assert again.stdout.strip() == "ok"


@pytest.mark.timeout(60)
def test_sshbox_refuses_an_unknown_host_key(sshbox: SshBox) -> None:  # noqa: F811
    assert sshbox.dir is not None
    (sshbox.dir / "known_hosts").write_text("")
    r = subprocess.run(sshbox.ssh("true"), capture_output=True, text=True)
    assert r.returncode != 0
    assert "host key" in r.stderr.lower()


@pytest.mark.timeout(60)
def test_sshbox_removes_everything() -> None:
    require_sshd()
    box = SshBox().start()
    assert box.dir is not None and box.proc is not None
    d, proc = box.dir, box.proc
    box.stop()
    assert not d.exists()
    assert proc.poll() is not None
