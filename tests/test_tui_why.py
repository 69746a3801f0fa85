"""Issue 15, "why is it down?": the TUI says why a service is as it is (the daemon's reason,
the backoff counting down), shows one service in full (state, setup, last stderr lines), and
an action pressed while the daemon is down says so at once. Pilot drives the real app against
a real daemon with real services."""

from __future__ import annotations

import re

import msgspec
import pytest
from daemonkit import SLEEPER, build_tree
from rich.text import Text
from tuikit import select, states, until

from runyard.tui.app import RunyardApp
from runyard.tui.banner import Banner
from runyard.tui.service_detail import DetailScreen, ServiceDetail
from runyard.tui.services_table import ServicesTable

pytestmark = pytest.mark.timeout(60)

#: Exits 3 at once: restarts, then fatal.
CRASHER = "import sys\nprint('crashing', file=sys.stderr, flush=True)\nsys.exit(3)\n"
#: Prints 25 numbered stderr lines (and stdout between them, 10 ms apart so that the two pipes
#: interleave in the log), then idles.
GRUMBLER = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
for n in range(1, 26):
    print(f"complaint {n}", file=sys.stderr, flush=True)
    print(f"chatter {n}", flush=True)
    time.sleep(0.01)
while True:
    time.sleep(0.05)
"""


def info_cell(app: RunyardApp, name: str) -> str:
    return str(app.services_screen.query_one(ServicesTable).get_cell(name, "status"))


async def test_fatal_and_backoff_services_say_why_in_the_table(root, daemons) -> None:
    """Finding: a fatal or backoff service showed RST=3, EXIT=3 and nothing else, though the
    daemon knew "gave up after 3 restarts" and when the next start would be."""
    project = """
    [services.crash]
    restart = "always"
    max_restarts = 1
    start_secs = 0.2
    backoff = { initial = 0.1, multiplier = 1.0, max = 0.1, jitter = 0.0 }
    [services.slow]
    restart = "always"
    start_secs = 0.2
    backoff = { initial = 30.0, multiplier = 1.0, max = 30.0, jitter = 0.0 }
    """
    tree = build_tree(root, {"crash": CRASHER, "slow": CRASHER}, project)
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: states(app).get("crash") == "fatal", "crash fatal")
        assert "gave up after 1 restarts" in info_cell(app, "crash")
        await until(pilot, lambda: states(app).get("slow") == "backoff", "slow in backoff")

        def countdown() -> int | None:
            m = re.search(r"restart in (\d+)s", info_cell(app, "slow"))
            return int(m.group(1)) if m else None

        first = await until(pilot, countdown, "a backoff countdown")
        assert 25 <= first <= 30 and "exited with 3" in info_cell(app, "slow")
        await until(pilot, lambda: (countdown() or 99) < first, "the countdown to go down", 5)
        # The same words, for the selected service, under the table of a narrow screen.
        await pilot.resize_terminal(80, 24)
        await select(pilot, app, "crash")
        why = app.services_screen.query_one("#why")
        await until(pilot, lambda: "gave up after" in str(why.render()), "the why line")


async def test_detail_pane_shows_state_setup_and_the_last_20_stderr_lines(root, daemons) -> None:
    """What to build: the selected service in full, beside the table from 120 columns and on
    a screen of its own (i) below that."""
    project = """
    [services.web]
    depends_on = { db = "started" }
    nofile = 256
    restart = "on-failure"
    max_restarts = 4
    """
    tree = build_tree(root, {"db": SLEEPER, "web": GRUMBLER}, project)
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(130, 40)) as pilot:
        await until(pilot, lambda: states(app).get("web") == "running", "web running")
        await select(pilot, app, "web")
        pane = app.services_screen.query_one("#side", ServiceDetail)
        assert pane.display
        await until(pilot, lambda: "complaint 25" in pane.text, "the last stderr lines")
        text = pane.text
        assert re.search(r"state\s+running\s+\(wanted up\)", text), text
        assert re.search(rf"bin\s+{re.escape(str(tree.root))}\S*/web\b", text), text
        assert re.search(r"needs\s+db \(started\)", text), text
        assert re.search(r"restart\s+on-failure, at most 4 in a row, backoff ", text), text
        assert re.search(r"limits\s+nofile 256", text), text
        assert re.search(r"version\s+1\.0\.0", text), text
        shown = re.findall(r"complaint (\d+)", text)
        assert shown == [str(n) for n in range(6, 26)], shown  # the last 20, stderr only
        assert "chatter" not in text
        await select(pilot, app, "db")
        await until(pilot, lambda: re.search(r"needed by\s+web", pane.text), "db's dependants")

        # Narrow: no pane beside the table; i opens the details on their own screen.
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: not pane.display, "the side pane hidden")
        await select(pilot, app, "web")
        await pilot.press("i")
        screen = await until(
            pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen, "the details"
        )
        assert isinstance(screen, DetailScreen)
        await until(pilot, lambda: "complaint 25" in screen.detail.text, "its stderr lines")
        assert re.search(r"needs\s+db \(started\)", screen.detail.text)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.services_screen, "back to services")


async def test_an_action_while_the_daemon_is_down_says_so_at_once(root, daemons) -> None:
    """Finding: r while the daemon was down showed "restart..." and failed silently ~60 s
    later (a restart waits up to 60 s for its reply)."""
    tree = build_tree(root, {"alpha": SLEEPER})
    d = daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: states(app).get("alpha") == "running", "alpha running")
        banner = app.services_screen.query_one(Banner)
        d.kill9()
        await until(pilot, lambda: banner.display, "the banner", timeout=15)
        # "At once" is counted, not timed (a 1 s deadline here was a loaded box away from
        # failing): no request goes out, so none waits for its timeout.
        sent: list[str] = []
        action = app.bridge.action

        async def counted(name: str, services: list[str]) -> object:
            sent.append(name)
            return await action(name, services)

        app.bridge.action = counted  # type: ignore[method-assign]
        app.clear_notifications()
        await pilot.press("r")

        def refused() -> bool:
            return any("unreachable" in n.message for n in app._notifications)

        await until(pilot, refused, "a notification that the restart was not sent")
        assert sent == []
        assert all(n.message != "restart alpha…" for n in app._notifications)
    d.stop()


def test_service_setup_on_the_wire_decodes_both_ways() -> None:
    """``setup`` is new in ServiceStatus: a status without it (an older daemon) decodes with
    an empty setup, and an older client reads a status that has it."""
    from runyard.protocol.messages import ServiceStatus
    from runyard.protocol.payloads import ServiceSetup

    old = msgspec.json.decode(b'{"name": "web", "state": "running"}', type=ServiceStatus)
    assert old.setup == ServiceSetup() and old.setup.bin == ""

    class OldServiceStatus(msgspec.Struct, kw_only=True):
        name: str
        state: str = "stopped"

    new = ServiceStatus(name="web", setup=ServiceSetup(bin="/x/web", restart="always"))
    wire = msgspec.json.encode(new)
    assert msgspec.json.decode(wire, type=OldServiceStatus).name == "web"
    assert msgspec.json.decode(wire, type=ServiceStatus).setup.bin == "/x/web"


#: Writes terminal escapes (clear screen, a window title, colour) and a tab on stderr, says them
#: in STATUS= too, then idles.
ESCAPER = r"""
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
import os, socket
print("\x1b[2J\x1b]0;pwned\x07\x1b[31mboom\x1b[0m\tend", file=sys.stderr, flush=True)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.sendto(b"READY=1\nSTATUS=\x1b[2Jserving\x1b[5m", os.environ["NOTIFY_SOCKET"])
while True:
    time.sleep(0.05)
"""


async def test_the_tui_does_not_pass_a_services_terminal_escapes(root, daemons) -> None:
    """Finding: the detail pane showed stderr lines, and the pane and the table the STATUS= text,
    raw (only markup escaped), so a service's escape sequences reached the operator's terminal;
    the log view cleans them (log_rings.clean)."""
    tree = build_tree(root, {"esc": ESCAPER}, "[services.esc]\nnotify = true\n")
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(130, 40)) as pilot:
        await until(pilot, lambda: states(app).get("esc") == "running", "esc running")
        await select(pilot, app, "esc")
        pane = app.services_screen.query_one("#side", ServiceDetail)
        await until(pilot, lambda: "boom" in pane.text, "the stderr line")
        assert "\x1b" not in pane.text and "\x07" not in pane.text, repr(pane.text)
        assert "boom" in pane.text and "\t" not in pane.text
        await until(pilot, lambda: "serving" in info_cell(app, "esc"), "the STATUS= text")
        assert "\x1b" not in info_cell(app, "esc"), repr(info_cell(app, "esc"))
        await until(pilot, lambda: "serving" in pane.text, "the STATUS= text in the pane")
        assert "\x1b" not in pane.text, repr(pane.text)


#: Text with square brackets on stderr and in STATUS=: an unclosed one, tags, an action.
BRACKETS = r"""
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("queue [5 items", file=sys.stderr, flush=True)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.sendto(b"READY=1\nSTATUS=[b]x[/b] [@click=app.quit]here[/] [3 left", os.environ["NOTIFY_SOCKET"])
while True:
    time.sleep(0.05)
"""


async def test_a_services_square_brackets_are_shown_as_text(root, daemons) -> None:
    """Finding: stderr lines and STATUS= went into Textual markup escaped for Rich only, so
    ``queue [5 items`` broke the detail pane (MarkupError, the app ended) and a STATUS= of
    ``[@click=app.quit]`` was markup (an action) in the why line."""
    tree = build_tree(root, {"br": BRACKETS}, "[services.br]\nnotify = true\n")
    daemons(tree).start()
    app = RunyardApp(tree.root)
    status = "[b]x[/b] [@click=app.quit]here[/] [3 left"
    async with app.run_test(size=(130, 40)) as pilot:
        await until(pilot, lambda: states(app).get("br") == "running", "br running")
        await select(pilot, app, "br")
        pane = app.services_screen.query_one("#side", ServiceDetail)
        await until(pilot, lambda: "queue" in pane.text and "left" in pane.text, "the texts")
        assert "queue [5 items" in pane.text and status in pane.text, pane.text
        why = app.services_screen.query_one("#why")
        await until(pilot, lambda: "left" in str(why.render()), "the why line")
        assert status in str(why.render()), str(why.render())
        cell = app.services_screen.query_one(ServicesTable).get_cell("br", "status")
        assert isinstance(cell, Text) and status in cell.plain, repr(cell)
