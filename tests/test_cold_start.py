"""What a daemon does between its launch and its first status answer (issue 16, cold start:
launch -> 50 running). Counted or observed, never timed; each case in a fresh interpreter."""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from daemonkit import build_tree, daemon_refuses, wait_for

from runyard.daemon.events import EventBus
from runyard.daemon.supervisor import Supervisor

pytestmark = pytest.mark.timeout(60)
LOG = logging.getLogger("test_cold_start")


def _run(code: str, *argv: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60
    )
    return out.stdout


GC_AT_EXIT = """
import atexit, gc, runpy, sys
atexit.register(lambda: print("gc enabled:", gc.isenabled()))
sys.argv = ["runyard", *sys.argv[1:]]
runpy.run_module("runyard.daemon", run_name="__main__")
"""


def test_a_daemon_launch_imports_with_the_gc_off_and_other_commands_keep_it() -> None:
    """Regression: the imports and the boot of a daemon ran ~75 young collections of objects
    that all live as long as the daemon (with the gc on, its CPU to boot done went ~0.21 ->
    0.23 s with 50 services). ``--help`` exits before any boot: the GC is still off then."""
    assert "gc enabled: False" in _run(GC_AT_EXIT, "daemon", "--help")
    assert "gc enabled: True" in _run(GC_AT_EXIT, "--help")


def test_after_the_boot_the_gc_is_on_with_the_boot_objects_old_and_nothing_frozen() -> None:
    """What the boot made goes to the oldest generation without a scan (the first young
    collection does not walk it), and none of it stays frozen (a runner that a reload removes
    would be a leaked cycle)."""
    from runyard.daemon.main import gc_after_boot

    gc.disable()
    try:
        made = [[i] for i in range(5000)]  # young, tracked
        # young: the count is allocations less deallocations of tracked objects, and other
        # threads of this process free some meanwhile (CI once saw 4987)
        assert gc.get_count()[0] >= 4000
        gc_after_boot()
        assert gc.isenabled()
        assert gc.get_count()[0] < 100  # gen 0 emptied
        assert gc.get_freeze_count() == 0
        assert all(gc.is_tracked(x) for x in made[:10])
    finally:
        gc.enable()


IDLE = "import time\nwhile True:\n    time.sleep(1000)\n"


def test_a_daemon_start_validates_the_manifest_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a daemon's start read and validated the manifest three times (the manifest
    check, the checksum check's own load, the boot's), each validation resolving every
    service's binPath (~11 lstat each): O(services) three times over before the first spawn.
    Now the checks load it once and the first boot runs what they validated."""
    from runyard.daemon.main import startup_checks
    from runyard.runtime.config.project import load_project
    from runyard.runtime.core import manifest as manifest_mod

    names = [f"a{i}" for i in range(3)]
    project = "".join(f"[services.{n}]\nautostart = false\n" for n in names)
    tree = build_tree(tmp_path / "root", dict.fromkeys(names, IDLE), project)
    project_file = tree.root.parent / "runyard.toml"
    validated: list[int] = []
    real = manifest_mod.validate_manifest

    def counted(manifest: Any, tree: Any = None) -> None:
        validated.append(len(manifest.services))
        real(manifest, tree)

    monkeypatch.setattr(manifest_mod, "validate_manifest", counted)
    report = startup_checks(tree, None, project_file)
    assert validated == [3] and report.manifest is not None, validated

    async def run() -> None:
        sup = Supervisor(tree, project_file, EventBus(), LOG)
        try:
            await sup.boot(load_project(project_file), report.manifest)
            assert sorted(sup.runners) == names
        finally:
            await sup.close()

    asyncio.run(run())
    assert validated == [3], validated  # the boot validated nothing again


#: Runs the daemon with every read of a project file counted (the count, after each read, in
#: the file $READS): runyard.toml is read by path in runtime.config.project._read_toml.
COUNT_READS = """
import os, sys
from pathlib import Path
from runyard.runtime.config import project

real, reads = project._read_toml, []

def counted(path):
    reads.append(str(path))
    Path(os.environ["READS"]).write_text(str(len(reads)))
    return real(path)

project._read_toml = counted
from runyard.daemon.cli import main
sys.argv = ["runyard", *sys.argv[1:]]
sys.exit(main())
"""


def test_a_daemon_launch_reads_runyard_toml_once(root, daemons, monkeypatch) -> None:
    """Regression (issue 16, cold start): a launch parsed runyard.toml three times, for the
    tree's root (the command line), for the startup checks and for the boot."""
    names = [f"a{i}" for i in range(3)]
    project = "".join(f"[services.{n}]\nautostart = true\n" for n in names)
    tree = build_tree(root, dict.fromkeys(names, IDLE), project)
    script = root.parent / "count_reads.py"
    script.write_text(COUNT_READS)
    reads = root.parent / "reads.txt"
    monkeypatch.setenv("READS", str(reads))
    d = daemons(tree, [sys.executable, str(script)]).start()
    with d.client() as c:
        wait_for(lambda: all(s.state == "running" for s in c.status().services), 30, "3 running")
        assert sorted(s.name for s in c.status().services) == names  # the one parse was used
    assert reads.read_text() == "1"


def test_a_project_named_through_dotdot_is_named_normalised(root) -> None:
    """Review finding (the one parse of this issue): --project conf/../runyard.toml was named
    with its ``..`` in the boot's messages; the daemon has always named it normalised."""
    tree = build_tree(root, {"web": IDLE}, '[services.web]\ncwd = "/etc"\n')
    (root.parent / "conf").mkdir()
    line = daemon_refuses(tree.root, root.parent / "conf" / ".." / "runyard.toml")
    assert f"{root.parent / 'runyard.toml'}: services.web" in line, line
    assert ".." not in line, line


class _CountedEnviron(dict):  # type: ignore[type-arg]
    """os.environ's contents, each full read of it counted."""

    reads = 0

    def items(self):  # type: ignore[no-untyped-def,override]
        type(self).reads += 1
        return super().items()

    def keys(self):  # type: ignore[no-untyped-def,override]
        type(self).reads += 1
        return super().keys()

    def __iter__(self):  # type: ignore[no-untyped-def]
        type(self).reads += 1
        return super().__iter__()


def test_loading_the_services_reads_the_environment_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: each service's env started from its own read of os.environ (every name and
    value decoded again: 500 services, 13-39 ms of a start). Now one snapshot per load."""
    import os

    from runyard.daemon.spec import load_specs
    from runyard.runtime.config.project import load_project

    names = [f"a{i}" for i in range(3)]
    project = "".join(f"[services.{n}]\nautostart = false\n" for n in names)
    tree = build_tree(tmp_path / "root", dict.fromkeys(names, IDLE), project)
    loaded = load_project(tree.root.parent / "runyard.toml")
    monkeypatch.setattr(os, "environ", _CountedEnviron(os.environ))
    specs, _ = load_specs(tree, loaded)
    assert sorted(specs) == names
    assert _CountedEnviron.reads == 1, _CountedEnviron.reads
    assert specs["a0"].env["PATH"]  # still from the environment


def test_a_start_reads_pipe_max_size_only_when_1_mib_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: each FIFO's resize read /proc/sys/fs/pipe-max-size before trying 1 MiB
    (two reads per start, ~11 us each); it is the fallback only."""
    from runyard.daemon.logs import fifo

    reads: list[int] = []
    real = fifo._pipe_max_size
    monkeypatch.setattr(fifo, "_pipe_max_size", lambda: reads.append(1) or real())
    pipes = fifo.LogPipes(tmp_path, "svc")
    try:
        pipes.prepare()
        if pipes.pipe_size == fifo.PIPE_SIZE:  # 1 MiB taken (root, or under the user quota)
            assert reads == [], reads
        else:  # refused: the fallback asked, once per stream
            assert len(reads) == 2, reads
    finally:
        pipes.close()


def test_the_bin_check_names_only_what_it_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the startup check of bin/ made a relative path (two abspaths) for every
    entry of every service, writable by others or not (~1.5 ms of a start of 50)."""
    import os

    from runyard.runtime.ops.doctor import check_bin

    tree = build_tree(tmp_path / "root", {"a0": IDLE, "a1": IDLE})
    named: list[str] = []
    real = os.path.relpath
    monkeypatch.setattr(os.path, "relpath", lambda p, *a: named.append(p) or real(p, *a))
    assert check_bin(tree).status == "pass"
    assert named == []
    loose = next(p for p in tree.bin_dir.rglob("a1") if p.is_file())
    loose.chmod(0o775)
    result = check_bin(tree)
    assert result.status == "warn" and os.path.relpath(loose, tree.root) in result.detail
    assert len(named) == 2  # the one group-writable file (and the assertion's own)
