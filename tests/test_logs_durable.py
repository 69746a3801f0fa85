"""Service logs that outlive the daemon: no line lost across ``kill -9``, tails that come from
the files when the ring is short, and log files only their owner (and group) can read."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from daemonkit import SLEEPER, build_tree, wait_for

from runyard.daemon.logs import ServiceLog, daemon_logger
from runyard.daemon.spec import ConfigError, load_specs
from runyard.runtime.config.project import load_project
from runyard.runtime.config.supervision import SupervisionError, parse_log_mode

pytestmark = pytest.mark.timeout(120)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- finding 3: modes


def test_service_logs_are_0640_not_0644_whatever_the_umask(tmp_path: Path) -> None:
    """Regression: service logs were forced to 0644, readable by every local user."""
    old = os.umask(0)
    try:
        log = ServiceLog("web", tmp_path, max_bytes=200, backups=2)
        log.feed("out", b"".join(b"line %d\n" % i for i in range(40)), ts=0.0)
    finally:
        os.umask(old)
    log.close()
    files = sorted((tmp_path / "web").iterdir())
    assert len(files) == 3  # web.log and two rotated backups
    assert {p.name: mode_of(p) for p in files} == {p.name: 0o640 for p in files}


def test_an_existing_0644_log_is_narrowed_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "web" / "web.log"
    path.parent.mkdir()
    path.write_bytes(b"")
    path.chmod(0o644)
    ServiceLog("web", tmp_path).close()
    assert mode_of(path) == 0o640


def test_daemon_log_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    """Regression: daemon.log took 0666 & ~umask, 0644 under the usual umask."""
    old = os.umask(0)
    try:
        logger = daemon_logger(tmp_path / "logs")
        logging.getLogger("runyard.test").info("hello")
    finally:
        os.umask(old)
    try:
        handler = next(h for h in logger.handlers if getattr(h, "_runyard_daemon_log", False))
        handler.doRollover()  # a rotation opens a fresh file: 0600 too
        logging.getLogger("runyard.test").info("again")
        handler.flush()
    finally:
        for h in [h for h in logger.handlers if getattr(h, "_runyard_daemon_log", False)]:
            logger.removeHandler(h)
            h.close()
    logs = tmp_path / "logs" / "runyard"
    assert mode_of(logs / "daemon.log") == 0o600
    assert mode_of(logs / "daemon.log.1") == 0o600


@pytest.mark.parametrize(
    ("value", "mode"), [(0o600, 0o600), ("0640", 0o640), ("644", 0o644), ("0o660", 0o660)]
)
def test_log_mode_takes_octal_ints_and_strings(value: int | str, mode: int) -> None:
    assert parse_log_mode(value) == mode


@pytest.mark.parametrize("value", [640, "0400", "0o1640", "rw-r-----", "", True, -1, 0o4640])
def test_log_mode_out_of_range_is_refused(value: object) -> None:
    with pytest.raises(SupervisionError, match="file mode"):
        parse_log_mode(value)  # type: ignore[arg-type]


def test_a_bad_log_mode_is_one_line_naming_the_key(root: Path) -> None:
    tree = build_tree(root, {"web": SLEEPER}, '[services.web]\nlog_mode = "0888"\n')
    with pytest.raises(ConfigError) as err:
        load_specs(tree, load_project(root.parent / "runyard.toml"))
    text = str(err.value)
    assert "services.web.log_mode" in text and "0888" in text and "\n" not in text


@pytest.mark.timeout(60)
def test_daemon_writes_logs_with_the_configured_modes(root: Path, daemons) -> None:
    project = '[services.private]\nlog_mode = "0600"\n[services.shared]\nlog_mode = 0o644\n'
    tree = build_tree(root, {"plain": SLEEPER, "private": SLEEPER, "shared": SLEEPER}, project)
    old = os.umask(0)  # the daemon inherits it: the modes must not depend on it
    try:
        d = daemons(tree).start()
    finally:
        os.umask(old)
    logs = tree.logs_dir
    for name in ("plain", "private", "shared"):
        wait_for(
            lambda name=name: b"sleeper up" in (logs / name / f"{name}.log").read_bytes(),
            what=f"{name}'s first line",
        )
    assert mode_of(logs / "plain" / "plain.log") == 0o640
    assert mode_of(logs / "private" / "private.log") == 0o600
    assert mode_of(logs / "shared" / "shared.log") == 0o644
    assert mode_of(logs / "runyard" / "daemon.log") == 0o600
    d.stop()


# --------------------------------------------------------------------------- finding 1: kill -9

#: Numbered lines at 20,000 a second (200 every 10 ms). Every write ends inside a line, at a
#: random byte of it, and its rest only comes with the next write 10 ms later: so at almost any
#: moment the pipe, or a daemon that read it, holds a line's head waiting for its end (a daemon
#: that kept it in memory lost it to kill -9). Once ``stop`` exists: the rest, "end N", then idle.
FLOOD = """
import os, random, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
stop = sys.argv[1]
n = 0
held = b""
next_at = time.monotonic()
while not os.path.exists(stop):
    batch = held + b"".join(b"%d\\n" % i for i in range(n, n + 200))
    n += 200
    last = len(b"%d\\n" % (n - 1))
    cut = len(batch) - random.randrange(1, last)  # inside the last line, never at its end
    os.write(1, batch[:cut])
    held = batch[cut:]
    next_at += 0.01
    delay = next_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
os.write(1, held + b"end %d\\n" % n)
while True:
    time.sleep(1)
"""

#: How many times the daemon is killed: the issue asks for 100 (about a minute on 2 idle cores);
#: LOGS_DURABLE_KILLS=N overrides.
KILLS = int(os.environ.get("LOGS_DURABLE_KILLS", "100"))


def logged_numbers(log_dir: Path) -> tuple[list[int], list[str]]:
    """Every number in the service's log files (oldest file first) and any other lines."""
    numbers: list[int] = []
    other: list[str] = []
    files = sorted(
        log_dir.glob("flood.log*"),
        key=lambda p: -int(p.suffix[1:] or 0) if p.suffix[1:].isdigit() else 0,
    )
    for path in files:
        for raw in path.read_bytes().splitlines():
            text = raw[28:].decode(errors="replace")  # after "2026-...Z "
            if text.startswith("out ") and text[4:].isdigit():
                numbers.append(int(text[4:]))
            elif not text.startswith("out end "):
                other.append(text)
    return numbers, other


@pytest.mark.timeout(240)
def test_kill9_of_the_daemon_under_a_flood_loses_no_line(root: Path, daemons) -> None:
    """Regression: kill -9 lost lines the dying daemon had read from the pipe but not written
    (40 consecutive lines in one of 40 kills), and the unterminated line it held back."""
    import random
    import time

    stop = root.parent / "stop-flood"
    project = f"""
    [services.flood]
    args = ["{stop}"]
    log_max_bytes = 4194304
    log_backups = 500
    """
    tree = build_tree(root, {"flood": FLOOD}, project)
    log_dir = tree.logs_dir / "flood"
    rng = random.Random(os.environ.get("LOGS_DURABLE_SEED"))
    began = time.monotonic()
    for _ in range(KILLS):
        d = daemons(tree).start()
        # A random moment while the daemon reads the flood (and the backlog of its downtime).
        time.sleep(rng.uniform(0.0, 0.3))
        d.kill9()
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: c.status(["flood"]).services[0].state == "running", what="flood up")
    stop.touch()
    wait_for(
        lambda: b" out end " in (log_dir / "flood.log").read_bytes(),
        timeout=60,
        what="the flood's last line",
    )
    elapsed = time.monotonic() - began
    d.stop()
    numbers, other = logged_numbers(log_dir)
    end = int((log_dir / "flood.log").read_bytes().rsplit(b" out end ", 1)[1].split()[0])
    assert other == [], other[:5]
    missing = sorted(set(range(end)) - set(numbers))
    seen: set[int] = set()
    twice = sorted({n for n in numbers if n in seen or seen.add(n)})
    assert not missing and not twice, (
        f"{len(missing)} missing (first {missing[:10]}), {len(twice)} twice (first {twice[:10]})"
        f" of {end} lines over {KILLS} kills in {elapsed:.0f}s"
    )
    assert numbers == list(range(end))  # and in order


# --------------------------------------------------------------------------- finding 2: tails

#: 300 numbered lines, then idle.
COUNT_300 = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
for i in range(300):
    print(f"n {i}", flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.mark.timeout(60)
def test_logs_tail_after_a_daemon_restart_comes_from_the_files(root: Path, daemons) -> None:
    """Regression: after a daemon restart `runyard logs -n 200` showed only the lines written
    since, though the files held the earlier ones."""
    tree = build_tree(
        root, {"count": COUNT_300}, "[services.count]\nlog_max_bytes = 2000\nlog_backups = 20\n"
    )
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: len(c.logs_tail("count", n=1000).lines) == 300, what="300 lines")
    d.kill9()
    d2 = daemons(tree).start()
    with d2.client() as c:
        reply = c.logs_tail("count", n=200)
        assert [line.line for line in reply.lines] == [f"n {i}" for i in range(100, 300)]
        seqs = [line.seq for line in reply.lines]
        assert seqs == sorted(set(seqs))  # in order, no duplicates
        everything = c.logs_tail("count", n=1000).lines  # the rotated files too
        assert [line.line for line in everything] == [f"n {i}" for i in range(300)]
    d2.stop()
