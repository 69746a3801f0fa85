"""The starts of one scheduling pass, spawned together (issue 16).

Each service's start is prepared on the daemon's thread (``ServiceRunner.prepare_start``: its
directory, log pipes, cgroup, the program checked), then the whole pass's Popen calls go to the
spawner thread in one call (``process.spawn_prepared``): 50 starts cost one thread hop, not 50.
(Feeding each to the thread as soon as it was prepared, to overlap the two, measured slower:
start 50 in 128 and 170 ms against 118 and 135 ms, alternated.) The install lock of each service stays held, shared, until
its spawn is done. On the way out (``with``), also when the pass failed, what was prepared is
spawned and finished, as when starts went one by one.

What a start leads to must stay as it was one by one: a service whose dependency is in the
batch waits for the batch to be spawned and finished first (``flush``), so it sees that
dependency started. A batch is bounded (``BATCH_MAX``): each prepared start holds its
``cgroup.procs`` and FIFO ends open until its spawn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .process import spawn_prepared
from .spawning import PreparedSpawn

if TYPE_CHECKING:
    from .service import ServiceRunner

__all__ = ["BATCH_MAX", "StartBatch"]

#: Starts spawned in one call at most: ~5 descriptors each stay open until the spawn.
BATCH_MAX = 32


class StartBatch:
    def __init__(self) -> None:
        self._starts: list[tuple[ServiceRunner, PreparedSpawn, Callable[[], None]]] = []
        #: Every runner added, spawned or failed (a spawn that failed is a start too).
        self.started: list[ServiceRunner] = []

    def waits_for(self, runner: ServiceRunner) -> bool:
        """Whether a dependency of ``runner`` is in the batch (flush before judging it)."""
        return any(r.name in runner.spec.depends_on for r, _, _ in self._starts)

    def add(self, runner: ServiceRunner, release: Callable[[], None]) -> None:
        """Prepare ``runner``'s start; ``release`` (its install hold) is called once its
        spawn is done, or at once when the start failed before it."""
        self.started.append(runner)
        try:
            prepared = runner.prepare_start()
        except BaseException:
            release()  # and what was prepared before is spawned on the way out (``__exit__``)
            raise
        if prepared is None:
            release()
            return
        self._starts.append((runner, prepared, release))
        if len(self._starts) >= BATCH_MAX:
            self.flush()

    def flush(self) -> None:
        """Spawn every prepared start in one call, then let each runner take its outcome."""
        starts, self._starts = self._starts, []
        if not starts:
            return
        try:
            spawned = spawn_prepared([prepared for _, prepared, _ in starts])
        finally:
            for _, _, release in starts:
                release()
        for (runner, _, _), outcome in zip(starts, spawned, strict=True):
            runner.finish_start(outcome)

    def __enter__(self) -> StartBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()  # also when the pass failed: what was prepared is spawned and finished
