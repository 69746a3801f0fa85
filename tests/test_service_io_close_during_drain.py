"""A daemon exit (``ServiceIO.close``) that lands while an exit's ``detach`` drains the pipes.

``detach`` awaits the drain, and ``close`` (daemon exit) may run in that await: it detaches
the reader and closes the pipes. The drain then sees no fds and ends; ``detach`` went on with
``self._reader.detach()`` on the None that ``close`` left, an AttributeError in the exit's
task (found by the i16-review5 review).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from daemonkit import SLEEPER, build_tree
from test_logs import procs, spawn  # noqa: F401 (procs: a fixture)

from runyard.daemon.service_io import ServiceIO
from runyard.daemon.spec import load_specs
from runyard.runtime.config.project import load_project

#: 64 KiB of lines, then exit.
FILL = "import os\nfor _ in range(640):\n    os.write(1, b'x' * 99 + b'\\n')\n"


def test_a_daemon_exit_during_an_exits_drain_is_not_an_error(
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    tree = build_tree(tmp_path / "rt", {"svc": SLEEPER})
    spec = load_specs(tree, load_project(tmp_path / "runyard.toml"))[0]["svc"]
    io = ServiceIO(spec, tmp_path / "logs", tmp_path / "fifo", lambda lines: None, lambda: None)

    async def scenario() -> None:
        fds = io.pipes.prepare()
        io.attach(spec)
        for _ in range(100):  # the attach's first read (of an empty pipe) is done
            if not io._reader._batches:
                break
            await asyncio.sleep(0)
        assert not io._reader._batches
        child = spawn(procs, FILL, fds)
        io.pipes.close_child_fds()
        # The loop does not run while we wait: the whole 64 KiB is left for the drain.
        child.wait(timeout=10)
        exit_task = asyncio.create_task(io.detach(spec))
        await asyncio.sleep(0)  # the drain has read once and yielded
        await io.close()
        await exit_task  # raised AttributeError before the fix

    asyncio.run(asyncio.wait_for(scenario(), 20))
