"""Scrollback into rotated log files: ``logs.tail`` with ``before_seq`` (the lines before one,
from the daemon's ring and its rotated files), older clients and daemons on either side of it,
and the TUI's one-service view loading older lines when paused at its top line."""

from __future__ import annotations

import msgspec
import pytest
from daemonkit import build_tree, wait_for
from tuikit import select, states, until

from runyard.protocol.messages import LogsReply, LogsTail, Request, encode
from runyard.tui.app import RunyardApp
from runyard.tui.logs_screen import LogsScreen

pytestmark = pytest.mark.timeout(60)

#: 3,000 numbered lines at once, then idle: the daemon's ring keeps the last 1,000, the log
#: files (rotated every ~20 kB) every one.
COUNT = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
sys.stdout.write("".join(f"line {n}\\n" for n in range(1, 3001)))
sys.stdout.flush()
while True:
    time.sleep(0.05)
"""
PROJECT = "[services.count]\nlog_max_bytes = 20000\nlog_backups = 30\n"


class OldLogsTail(Request, tag="logs.tail"):
    """``logs.tail`` as a client (and a daemon) before ``before_seq`` knew it."""

    service: str
    n: int = 100
    after_seq: int | None = None


def texts(reply: LogsReply) -> list[str]:
    return [line.line for line in reply.lines]


def test_logs_tail_before_seq_reads_rotated_files_and_older_clients_work(root, daemons) -> None:
    tree = build_tree(root, {"count": COUNT}, PROJECT)
    d = daemons(tree).start()
    logs = tree.root / "logs" / "count"
    with d.client() as c:
        wait_for(lambda: texts(c.logs_tail("count", n=1)) == ["line 3000"], what="every line")
        assert any(p.name.endswith(".1") for p in logs.iterdir()), sorted(logs.iterdir())
        newest = c.logs_tail("count", n=1000)
        assert texts(newest) == [f"line {n}" for n in range(2001, 3001)]
        first = newest.lines[0].seq
        # The 1,000 lines before the ring's oldest: from the rotated files, numbered below it.
        older = c.logs_tail("count", n=1000, before_seq=first)
        assert texts(older) == [f"line {n}" for n in range(1001, 2001)]
        assert [x.seq for x in older.lines] == list(range(first - 1000, first))
        oldest = c.logs_tail("count", n=1000, before_seq=older.lines[0].seq)
        assert texts(oldest) == [f"line {n}" for n in range(1, 1001)]
        assert c.logs_tail("count", n=1000, before_seq=oldest.lines[0].seq).lines == []
        assert c.logs_tail("count", n=0, before_seq=first).lines == []
        # A client from before before_seq: the request it sends still means the newest lines.
        reply = c.request(OldLogsTail(service="count", n=5))
        assert isinstance(reply, LogsReply) and texts(reply)[-1] == "line 3000"
        assert len(reply.lines) == 5
    # A daemon from before before_seq reads today's request as the old one (the field is
    # ignored): the newest lines come, and the client keeps only those below before_seq.
    old = msgspec.json.decode(
        encode(LogsTail(service="count", n=5, before_seq=9)), type=OldLogsTail
    )
    assert (old.service, old.n, old.after_seq) == ("count", 5, None)


async def test_tui_scrolls_back_into_rotated_files(root, daemons) -> None:
    tree = build_tree(root, {"count": COUNT}, PROJECT)
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: states(app).get("count") == "running", "count running")
        await select(pilot, app, "count")
        await pilot.press("enter")
        screen = await until(
            pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen, "the logs screen"
        )
        assert isinstance(screen, LogsScreen)
        view = screen.view
        await until(pilot, lambda: view.plain_lines()[-1:] == ["line 3000"], "the tail")
        assert len(view.plain_lines()) == 1000  # the daemon's ring
        await pilot.press("home")  # paused at the top: the 1,000 before come from the files
        await until(pilot, lambda: len(view.plain_lines()) == 2000, "older lines")
        assert view.plain_lines()[0] == "line 1001" and not view.follow
        assert view.scroll_offset.y == 1000  # the line that was on top stays on top
        assert view.rendered_rows()[1000].endswith("line 2001")
        await pilot.press("home")
        await until(pilot, lambda: len(view.plain_lines()) == 3000, "the oldest lines")
        assert view.plain_lines() == [f"line {n}" for n in range(1, 3001)]
        seqs = [s.line.seq for s in view.kept]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3000
        await pilot.press("home")
        await until(
            pilot,
            lambda: any("the start of the log" in n.message for n in app._notifications),
            "the notice that there is no more",
        )
        await pilot.press("end")  # following again: back to the newest, the ring cut back
        await until(pilot, lambda: view.follow, "following")
        assert view.plain_lines()[-1] == "line 3000"


def counter(prefix: str) -> str:
    return COUNT.replace('f"line {n}', f'f"{prefix} {{n}}')


async def test_all_logs_scroll_back_every_service_merged_by_time(root, daemons) -> None:
    project = "".join(
        f"[services.{n}]\nlog_max_bytes = 20000\nlog_backups = 30\n" for n in ("aa", "bb")
    )
    tree = build_tree(root, {"aa": counter("aa"), "bb": counter("bb")}, project)
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(
            pilot, lambda: states(app) == {"aa": "running", "bb": "running"}, "both running"
        )
        await pilot.press("L")
        screen = await until(
            pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen, "the all-logs view"
        )
        assert isinstance(screen, LogsScreen)
        view = screen.view

        def of(prefix: str) -> list[int]:
            return [int(x.split()[1]) for x in view.plain_lines() if x.startswith(prefix + " ")]

        await until(
            pilot, lambda: of("aa")[-1:] == [3000] and of("bb")[-1:] == [3000], "both tails"
        )
        assert len(of("aa")) == len(of("bb")) == 1000
        await pilot.press("home")
        await until(pilot, lambda: len(view.plain_lines()) == 4000, "older lines of both")
        await pilot.press("home")
        await until(pilot, lambda: len(view.plain_lines()) == 6000, "the oldest of both")
        assert of("aa") == of("bb") == list(range(1, 3001))
        # Each page (the 1,000 lines before each service's oldest) is merged by time.
        stamps = [s.line.ts for s in view.kept]
        for page in (stamps[:2000], stamps[2000:4000]):
            assert page == sorted(page)
        assert {s.service for s in view.kept[:10]} <= {"aa", "bb"}
        await pilot.press("home")
        await until(
            pilot,
            lambda: any("the start of the log" in n.message for n in app._notifications),
            "the notice that there is no more",
        )
