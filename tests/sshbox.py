"""A real OpenSSH server for tests: a throwaway sshd on a free 127.0.0.1 port.

``SshBox`` starts Debian's /usr/sbin/sshd in the foreground (``-D -e``) with its own config,
host key, user key, authorized_keys, known_hosts and an ssh_config in a private temp dir, so a
test runs ``ssh -F box.config box.alias CMD`` (``box.ssh(...)`` builds that argv) with strict host
key checking and nothing of the operator's (~/.ssh, the agent) involved. Remote commands get a
PATH that starts with this Python's bin directory (the worktree's .venv/bin, so ``runyard`` is
found) through sshd's own ``SetEnv``; the server accepts no client environment (no AcceptEnv).

Usage::

    with SshBox() as box:                 # or the ``sshbox`` pytest fixture
        subprocess.run(box.ssh("runyard", "--version"), check=True)
        box.authorize("alice")            # another (existing) system user: alias box.alias_for
        box.kill_sessions()               # drop every open connection; sshd keeps listening

Everything (sshd, its sessions, the temp dir) is gone when the context ends. It needs root (it
logs in as root with the key only) and openssh-server (.ci/run installs it); without them the
fixture skips, except under CI=true where it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
#: sshd's privilege separation directory (Debian's package creates it at boot via tmpfiles).
PRIVSEP_DIR = Path("/run/sshd")


def sshd_missing_reason() -> str | None:
    """Why a real sshd cannot run here, or None when it can."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing (Debian package openssh-server)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"system tool {tool!r} is missing (Debian package openssh-client)"
    if os.geteuid() != 0:
        return "a test sshd needs root (it logs in as root with a throwaway key)"
    return None


def require_sshd() -> None:
    """Skip when sshd cannot run; fail instead under CI=true (.ci/run must install it)."""
    reason = sshd_missing_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} under CI=true")
    pytest.skip(reason)


def free_port() -> int:
    """A port on 127.0.0.1 free right now (sshd may still lose a race for it: start retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair at path (no passphrase); returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class SshBox:
    """One throwaway sshd; see the module docstring."""

    def __init__(self, *, alias: str = "runyard-box", path_prefix: list[str] | None = None) -> None:
        self.alias = alias
        # The remote PATH: this interpreter's bin dir first (the .venv holding runyard).
        self.path_prefix = path_prefix or [str(Path(sys.executable).parent)]
        self.dir: Path | None = None
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    # -- files -------------------------------------------------------------------------------

    @property
    def config(self) -> Path:
        """The ssh_config file a client passes with -F."""
        assert self.dir is not None
        return self.dir / "ssh_config"

    @property
    def identity(self) -> Path:
        assert self.dir is not None
        return self.dir / "id_ed25519"

    @property
    def log(self) -> Path:
        """sshd's own log (-e sends it to stderr, which goes here)."""
        assert self.dir is not None
        return self.dir / "sshd.log"

    def alias_for(self, user: str) -> str:
        return self.alias if user == "root" else f"{self.alias}-{user}"

    def ssh(self, *command: str, user: str = "root") -> list[str]:
        """The argv of ``ssh -F CONFIG ALIAS COMMAND...`` (-T: no tty)."""
        return ["ssh", "-F", str(self.config), "-T", self.alias_for(user), *command]

    @property
    def ssh_command(self) -> str:
        """The ssh client as one shell-quoted string (for RUNYARD_SSH / --ssh-command)."""
        return f"ssh -F {self.config}"

    def _write_files(self) -> None:
        assert self.dir is not None
        d = self.dir
        self.host_key_line = _keygen(d / "host_ed25519", "runyard-test-host")
        self.user_key_line = _keygen(self.identity, "runyard-test-user")
        (d / "authorized_keys").mkdir(mode=0o755)
        (d / "sshd_config").write_text(
            "\n".join(
                [
                    f"ListenAddress 127.0.0.1:{self.port}",
                    f"HostKey {d / 'host_ed25519'}",
                    f"PidFile {d / 'sshd.pid'}",
                    f"AuthorizedKeysFile {d / 'authorized_keys'}/%u",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitUserEnvironment no",
                    "X11Forwarding no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "UseDNS no",
                    "LogLevel VERBOSE",
                    "MaxStartups 50:30:100",
                    "MaxSessions 50",
                    # Remote commands find the worktree's runyard first (sshd's SetEnv wins over
                    # the default PATH; the client can send nothing: no AcceptEnv).
                    "SetEnv PATH=" + ":".join([*self.path_prefix, "/usr/sbin:/usr/bin:/sbin:/bin"]),
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        (d / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {self.host_key_line}\n")
        self.config.write_text("")
        self.authorize("root")

    def authorize(self, user: str) -> str:
        """Let ``user`` (an existing system user) log in with the test key; returns its alias."""
        assert self.dir is not None
        keys = self.dir / "authorized_keys" / user
        keys.write_text(self.user_key_line + "\n")
        keys.chmod(0o644)
        alias = self.alias_for(user)
        with self.config.open("a") as f:
            f.write(
                "\n".join(
                    [
                        f"Host {alias}",
                        "  HostName 127.0.0.1",
                        f"  Port {self.port}",
                        f"  User {user}",
                        f"  IdentityFile {self.identity}",
                        "  IdentitiesOnly yes",
                        "  IdentityAgent none",
                        f"  UserKnownHostsFile {self.dir / 'known_hosts'}",
                        "  GlobalKnownHostsFile /dev/null",
                        "  StrictHostKeyChecking yes",
                        "  CheckHostIP no",
                        "  UpdateHostKeys no",
                        "  BatchMode yes",
                        "  ControlMaster no",
                        "  ControlPath none",
                        "  ConnectTimeout 10",
                        "  ServerAliveInterval 2",
                        "  ServerAliveCountMax 3",
                        "  LogLevel ERROR",
                        "",
                    ]
                )
            )
        return alias

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> SshBox:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)  # sshd refuses to start without it
        for _attempt in range(3):
            self.dir = Path(tempfile.mkdtemp(prefix="ry-sshd-"))
            self.dir.chmod(0o755)
            self.port = free_port()
            self._write_files()
            check = subprocess.run(
                [SSHD, "-t", "-f", str(self.dir / "sshd_config")], capture_output=True, text=True
            )
            if check.returncode != 0:
                raise RuntimeError(f"sshd -t refused the test config: {check.stderr.strip()}")
            with self.log.open("wb") as log:
                self.proc = subprocess.Popen(
                    [SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._wait_listening(timeout):
                self._wait_login(timeout)
                return self
            self.stop()  # lost the port race (or failed): a fresh dir and port
        raise RuntimeError("the test sshd did not start (see its log above)")

    def _wait_listening(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.stderr.write(self.log.read_text(errors="replace"))
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return True
            time.sleep(0.02)
        return False

    def _wait_login(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            r = subprocess.run(
                self.ssh("true"), capture_output=True, text=True, stdin=subprocess.DEVNULL
            )
            if r.returncode == 0:
                return
            last = r.stderr.strip()
            time.sleep(0.1)
        raise RuntimeError(f"cannot log in to the test sshd: {last}\n{self.log.read_text()}")

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return _children(self.proc.pid)

    def kill_sessions(self) -> list[int]:
        """Kill every open connection: sshd's per-connection processes, their privilege-separated
        children (which hold the socket too) and what those run. The listener keeps accepting
        new connections. Returns the pids killed."""
        doomed: list[int] = []
        deadline = time.monotonic() + 10
        # Repeat: a connection half-way through login may fork while we kill.
        while (todo := self.session_pids()) and time.monotonic() < deadline:
            while todo:
                pid = todo.pop()
                doomed.append(pid)
                todo.extend(_children(pid))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        return doomed

    def stop(self) -> None:
        """Stop sshd and its sessions, remove every file."""
        if self.proc is not None:
            self.kill_sessions()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> SshBox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def sshbox() -> Iterator[SshBox]:
    """A started SshBox, stopped and removed when the test ends (``from sshbox import sshbox``)."""
    require_sshd()
    with SshBox() as box:
        yield box
