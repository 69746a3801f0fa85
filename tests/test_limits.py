"""Resource limits per service: memory_max and tasks_max enforced by the daemon's sampling (no
cgroup controller on the test machines), nofile/core by setrlimit in the child, cpu_max said to be
unenforced, range errors on one line, and the cgroup seam against a real temporary cgroup."""

from __future__ import annotations

import contextlib
import os
import time
import tomllib
import uuid
from pathlib import Path

import pytest
from daemonkit import SLEEPER, build_tree, daemon_refuses, wait_for

from runyard.daemon.cgroup import cgroup2_mount
from runyard.daemon.cgroup_limits import apply_cgroup_limits, oom_kills
from runyard.daemon.limit_watch import TreeUsage, over_limit
from runyard.runtime.config.limits import UNLIMITED, Limits, format_size, parse_limits
from runyard.runtime.config.project import parse_project
from runyard.runtime.config.supervision import DEFAULTS, SupervisionError, merge
from runyard.runtime.core.errors import ProjectError

pytestmark = pytest.mark.timeout(90)

MiB = 1 << 20


def _limits(**settings: object) -> Limits:
    return parse_limits({**DEFAULTS, **settings})


def test_limit_settings_parse_sizes_shares_and_unlimited() -> None:
    lim = _limits(memory_max="64MiB", cpu_max="50%", tasks_max=20, nofile=64, core="unlimited")
    assert lim == Limits(memory_max=64 * MiB, cpu_max=0.5, tasks_max=20, nofile=64, core=UNLIMITED)
    assert _limits(memory_max="1G").memory_max == 1 << 30
    assert _limits(memory_max=67108864, cpu_max=1.5, core=0) == Limits(
        memory_max=64 * MiB, cpu_max=1.5, core=0
    )
    assert _limits() == Limits() and not Limits().any
    assert format_size(64 * MiB) == "64 MiB" and format_size(int(70.6 * MiB)) == "71 MiB"


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"memory_max": "lots"}, "memory_max: 'lots' is not a size"),
        ({"memory_max": "100K"}, "memory_max: expected an integer from 1048576"),
        ({"cpu_max": "50"}, "cpu_max: '50' is not a share of CPUs"),
        ({"cpu_max": "0%"}, "cpu_max: expected a number from 0.01 to 1024"),
        ({"core": "huge"}, "core: 'huge' is not a size"),
    ],
)
def test_limit_strings_out_of_shape_or_range_are_one_line(settings: dict, problem: str) -> None:
    with pytest.raises(SupervisionError) as info:
        _limits(**settings)
    assert str(info.value).startswith(problem) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("toml", "where", "problem"),
    [
        ("tasks_max = 0", "tasks_max", "from 1 to 4194304, got 0"),
        ("nofile = 8", "nofile", "from 16 to 1048576, got 8"),
        ("memory_max = 100", "memory_max", "from 1048576"),
        ("cpu_max = nan", "cpu_max", "from 0.01 to 1024, got nan"),
        ("core = -1", "core", "from 0"),
    ],
)
def test_limit_numbers_out_of_range_name_file_key_and_range(
    toml: str, where: str, problem: str
) -> None:
    with pytest.raises(ProjectError) as info:
        parse_project(tomllib.loads(f"[services.web]\n{toml}"), Path("/p/runyard.toml"))
    text = str(info.value)
    assert text.startswith(f"/p/runyard.toml: services.web.{where}: expected "), text
    assert problem in text and "\n" not in text


def test_limit_template_and_project_merge_field_by_field() -> None:
    proj = parse_project(tomllib.loads('[services.web]\nmemory_max = "32M"'), None)
    tmpl = parse_project(tomllib.loads("[services.web]\ntasks_max = 5\nmemory_max = 1048576"), None)
    merged = merge(tmpl.service("web").supervise, proj.service("web").supervise)
    assert parse_limits(merged) == Limits(memory_max=32 * MiB, tasks_max=5)


def test_daemon_refuses_a_bad_limit_string_in_one_line(root: Path) -> None:
    build_tree(root, {"web": SLEEPER}, '[services.web]\nmemory_max = "64 megs"\n')
    line = daemon_refuses(root)
    assert "services.web.memory_max: '64 megs' is not a size" in line


def test_over_limit_reasons_are_worded_as_the_issue_says() -> None:
    lim = Limits(memory_max=64 * MiB, tasks_max=20)
    both = {"memory_max", "tasks_max"}
    assert over_limit(lim, TreeUsage(int(70.6 * MiB), 3), both) == (
        "memory limit 64 MiB exceeded (rss 71 MiB)"
    )
    assert over_limit(lim, TreeUsage(MiB, 27), both) == "tasks limit 20 exceeded (27 tasks)"
    assert over_limit(lim, TreeUsage(64 * MiB, 20), both) is None
    # a limit a cgroup controller applies is not sampled
    assert over_limit(lim, TreeUsage(100 * MiB, 1), {"tasks_max"}) is None


# --- real daemon, real processes -------------------------------------------------------------

#: First run: 40 MiB, the time, then 160 MiB more (crossing 64 MiB right after the time is
#: written). Later runs find the marker and idle.
HOG = """
import os, sys, time
if os.path.exists("hogged"):
    print("second run idles", flush=True)
    while True:
        time.sleep(0.05)
open("hogged", "w").close()
keep = [b"\\x01" * (40 << 20)]
with open("crossing.tmp", "w") as f:
    f.write(repr(time.time()))
os.rename("crossing.tmp", "crossing")
for _ in range(16):
    keep.append(b"\\x01" * (10 << 20))
while True:
    time.sleep(0.05)
"""


def _status(c, name: str):
    (s,) = c.status([name]).services
    return s


def test_memory_max_stops_and_restarts_the_service_with_the_reason(root, daemons) -> None:
    project = (
        '[services.hog]\nmemory_max = "64MiB"\n'
        "backoff = { initial = 1.0, jitter = 0 }\nstart_secs = 0\n"
    )
    tree = build_tree(root, {"hog": HOG}, project)
    d = daemons(tree).start()
    with d.client() as c:
        first = wait_for(lambda: _status(c, "hog").pid, what="hog spawned")
        backoff = wait_for(
            lambda: (s := _status(c, "hog")).state == "backoff" and s, what="hog killed"
        )
        assert backoff.reason.startswith("memory limit 64 MiB exceeded (rss "), backoff.reason
        assert backoff.reason.endswith("; restart in 1.0s"), backoff.reason
        assert backoff.last_exit == -9 and backoff.pid is None
        crossing = float((tree.data_dir / "hog" / "crossing").read_text())
        kill_after = backoff.last_exit_at - crossing
        again = wait_for(
            lambda: (s := _status(c, "hog")).state == "running" and s, what="hog restarted"
        )
        assert again.pid != first and again.restarts == 1
    print(f"\nmemory limit: crossing -> killed and reaped {kill_after:.3f}s")
    assert kill_after < 1.0, kill_after


#: Forks 500 children (each sleeps, then exits), one every 10 ms: a bounded fork bomb.
FORKER = """
import os, time
for i in range(500):
    if os.fork() == 0:
        time.sleep(30)
        os._exit(0)
    time.sleep(0.01)
while True:
    time.sleep(0.05)
"""


def test_tasks_max_stops_a_fork_bomb_and_the_daemon_keeps_answering(root, daemons) -> None:
    project = '[services.bomb]\ntasks_max = 20\nrestart = "never"\nstart_secs = 0\n'
    tree = build_tree(root, {"bomb": FORKER}, project)
    d = daemons(tree).start()
    slowest = 0.0
    with d.client(timeout=5.0) as c:

        def stopped():
            nonlocal slowest
            t = time.monotonic()
            s = _status(c, "bomb")
            slowest = max(slowest, time.monotonic() - t)
            return s.state == "exited" and s

        s = wait_for(stopped, what="the fork bomb stopped")
        assert s.reason.startswith("tasks limit 20 exceeded ("), s.reason
        pgid = s.pgid or 0
    print(f"\ntasks limit: slowest status while the bomb ran {slowest * 1000:.0f} ms")
    assert slowest < 1.0
    assert pgid == 0  # nothing left: the process group is gone with the service
    assert d.proc is not None
    ours = [int(p) for p in os.listdir("/proc") if p.isdigit() and _in_tree(int(p), tree.root)]
    assert [p for p in ours if p != d.proc.pid] == []


def _in_tree(pid: int, root: Path) -> bool:
    with contextlib.suppress(OSError):
        return str(root) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    return False


def test_nofile_and_core_are_set_in_the_child_and_cpu_max_said_unenforced(root, daemons) -> None:
    project = '[services.web]\nnofile = 64\ncore = 0\ncpu_max = "50%"\n'
    tree = build_tree(root, {"web": SLEEPER}, project)
    d = daemons(tree).start()
    with d.client() as c:
        s = wait_for(lambda: (s := _status(c, "web")).state == "running" and s, what="running")
        # in the service's own cgroup the controller's absence is named with the directory;
        # without a cgroup (subreaper containment) the plain reason
        assert s.limits_note.startswith("cpu_max 50% not enforced (")
        assert "cpu" in s.limits_note and "controller" in s.limits_note
    limits = Path(f"/proc/{s.pid}/limits").read_text().splitlines()
    (files,) = [line for line in limits if line.startswith("Max open files")]
    assert files.split()[3:5] == ["64", "64"], files
    (core,) = [line for line in limits if line.startswith("Max core file size")]
    assert core.split()[4:6] == ["0", "0"], core


# --- the cgroup seam -----------------------------------------------------------------------


@pytest.fixture
def temp_cgroup():
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 mount in /proc/self/mountinfo")
    path = mount / f"runyard-test-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup under {mount}: {exc.strerror}")
    try:
        yield path
    finally:
        path.rmdir()


def test_apply_cgroup_limits_reports_controllers_not_enabled(temp_cgroup: Path) -> None:
    controllers = set((temp_cgroup / "cgroup.controllers").read_text().split())
    lim = Limits(memory_max=64 * MiB, tasks_max=20, cpu_max=0.5, nofile=64)
    result = apply_cgroup_limits(temp_cgroup, lim)
    for name, controller in (("memory_max", "memory"), ("tasks_max", "pids"), ("cpu_max", "cpu")):
        if controller not in controllers:
            assert (
                result.not_applied[name] == f"{controller} controller not enabled in {temp_cgroup}"
            )
    if controllers & {"memory", "pids", "cpu"}:  # pragma: no cover - not on the dev machines
        assert (temp_cgroup / "pids.max").read_text().strip() == "20" or "pids" not in controllers
    else:
        assert result.applied == frozenset()
        assert oom_kills(temp_cgroup) is None  # no memory.events without the controller
        pytest.skip(f"no v2 controller enabled under {temp_cgroup.parent}: write path not run")


def test_sigkill_is_oom_killed_only_when_memory_events_counted_one(tmp_path: Path) -> None:
    """memory.events of the service's cgroup decides; a bare SIGKILL stays `exit -9`."""
    import asyncio
    import signal

    from runyard.daemon.service_limits import ServiceLimits

    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    state = ServiceLimits()
    state.cgroup_dir = tmp_path
    state.spawned()
    assert asyncio.run(state.exit_cause(-signal.SIGKILL)) is None  # count unchanged: a kill -9
    events.write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n")
    assert asyncio.run(state.exit_cause(-signal.SIGTERM)) is None
    assert asyncio.run(state.exit_cause(-signal.SIGKILL)) == "oom-killed"
    no_cgroup = ServiceLimits()
    no_cgroup.spawned()
    assert asyncio.run(no_cgroup.exit_cause(-signal.SIGKILL)) is None


def test_an_oom_kill_between_the_spawn_and_its_finish_is_oom_killed(tmp_path: Path) -> None:
    """Regression (of the start batch, issue 16): the cgroup's OOM count was read after the
    spawn (``spawned``, from ``finish_start``), and a pass now finishes its starts only once the
    whole batch is spawned (up to 32 Popens later): a program killed by the OOM killer at once
    had its kill counted in that baseline and its exit read ``exit -9``, not ``oom-killed``.
    The count is taken when the cgroup is placed, before the spawn."""
    import asyncio
    import signal

    from runyard.daemon.service_limits import ServiceLimits

    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    state = ServiceLimits()
    state.place(tmp_path, Limits())  # prepare_start: the cgroup made, nothing spawned yet
    # spawned, and killed by the kernel while the rest of the batch is spawned
    events.write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n")
    state.spawned()  # finish_start
    assert asyncio.run(state.exit_cause(-signal.SIGKILL)) == "oom-killed"
