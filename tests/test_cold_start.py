"""What a daemon does between its launch and its first status answer (issue 16, cold start:
launch -> 50 running). Counted or observed, never timed; each case in a fresh interpreter."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


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


def test_after_the_boot_the_gc_is_on_and_what_the_boot_made_is_frozen() -> None:
    from runyard.daemon.main import gc_after_boot

    gc.disable()
    try:
        gc_after_boot()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0  # the boot's objects: out of every later collection
    finally:
        gc.unfreeze()
        gc.enable()
