"""Found by CI (stop 22): ``test_details_show_cpu_rss_sparklines_and_disk_shows_free_space``
failed once with ``NoMatches: No nodes match 'ServicesTable'``. The bridge's periodic
StatusRefreshed reached the app while ``run_test`` was ending and the services screen's widgets
were already gone, and the app raised. The same hole was open at the other end: a status that
came before the services screen was composed raised too, and was lost; so did a disk report
that reached the disk panel before its columns were added, or after its table was gone, and
a status that reached a details pane before its text was composed, or after it was gone.

Now what the daemon says before the table is there waits for it, and what comes after the
screen is torn down is dropped. Pilot drives the real app on the scripted bridge (fixed data)."""

from __future__ import annotations

import functools

import msgspec
import pytest
from tuikit import DISK_REPORT, FIXED_ROOT, NOW, SNAPSHOT, ScriptedBridge, states, until

from runyard.protocol.messages import ServiceStatus
from runyard.protocol.payloads import DiskReport
from runyard.tui.app import HELD_MAX, RunyardApp
from runyard.tui.bridge import Bridge
from runyard.tui.disk_screen import DiskScreen
from runyard.tui.service_detail import DetailScreen, ServiceDetail
from runyard.tui.services_table import ServicesTable

pytestmark = pytest.mark.timeout(60)


class SilentBridge(ScriptedBridge):
    """Posts nothing on its own: the test says what the daemon said, and when."""

    async def run(self) -> None:
        while not self._stopping:
            await self._retopic.wait()
            self._retopic.clear()


def silent_app() -> RunyardApp:
    return RunyardApp(FIXED_ROOT, bridge=functools.partial(SilentBridge), clock=lambda: NOW)


def changed(status: ServiceStatus, state: str) -> ServiceStatus:
    return msgspec.structs.replace(status, state=state)


async def test_status_refreshed_after_the_services_screen_is_torn_down_is_dropped() -> None:
    app = silent_app()
    async with app.run_test(size=(100, 30)) as pilot:
        app.post_message(Bridge.Connected(SNAPSHOT))
        want = {s.name: s.state for s in SNAPSHOT.services}
        await until(pilot, lambda: states(app) == want, "the snapshot in the table")
        # What run_test's exit does to the screen before the app's queue is empty.
        await app.services_screen.query_one(ServicesTable).remove()
        first = SNAPSHOT.services[0]
        app.post_message(Bridge.StatusRefreshed(list(SNAPSHOT.services)))
        app.post_message(Bridge.ServiceChanged(changed(first, "stopped")))
        app.post_message(Bridge.Connected(SNAPSHOT))
        await pilot.pause()
        await pilot.pause()
        assert app.services_screen.shown_table() is None
    # run_test re-raises what a handler raised: reaching here means nothing did.
    assert app.return_code in (0, None)


async def test_status_before_the_services_screen_is_composed_waits_for_it() -> None:
    app = silent_app()
    first, second = SNAPSHOT.services[0], SNAPSHOT.services[1]
    # The daemon answers before the screen exists (a fast daemon, a slow terminal).
    app._connected(Bridge.Connected(SNAPSHOT))
    app._service_changed(Bridge.ServiceChanged(changed(first, "stopped")))
    app._service_changed(Bridge.ServiceChanged(changed(second, "fatal")))
    async with app.run_test(size=(100, 30)) as pilot:
        want = {s.name: s.state for s in SNAPSHOT.services}
        want |= {first.name: "stopped", second.name: "fatal"}
        await until(pilot, lambda: states(app) == want, "what came before the table, in order")


def test_changes_held_before_the_table_are_bounded() -> None:
    app = silent_app()
    first = SNAPSHOT.services[0]
    app._connected(Bridge.Connected(SNAPSHOT))
    for n in range(HELD_MAX * 3):
        app._service_changed(Bridge.ServiceChanged(changed(first, f"s{n}")))
    held = app._held
    assert len(held) == HELD_MAX + 1
    assert held[0] == (True, list(SNAPSHOT.services))  # the whole one is kept
    assert held[-1][1][0].state == f"s{HELD_MAX * 3 - 1}"  # and the newest changes
    # A whole status replaces everything held.
    app._refreshed(Bridge.StatusRefreshed(list(SNAPSHOT.services)))
    assert app._held == [(True, list(SNAPSHOT.services))]


async def test_disk_report_before_the_panel_is_mounted_or_after_it_is_torn_down() -> None:
    """Before the fix a report that came between the panel's push and its on_mount raised
    "More values provided than there are columns"; one after its table went, NoMatches."""
    app = silent_app()
    report = msgspec.convert(DISK_REPORT, DiskReport)
    async with app.run_test(size=(100, 30)) as pilot:
        app.open_disk()
        screen = await until(
            pilot, lambda: isinstance(app.screen, DiskScreen) and app.screen, "the disk panel"
        )
        app.post_message(Bridge.DiskUpdated(report))
        await until(pilot, lambda: screen.shown, "the report in the panel")
        # The panel's widgets go one by one: its status line first, then its table.
        await screen.query_one("#disk-status").remove()
        app.post_message(Bridge.DiskUpdated(report))
        await pilot.pause()
        await pilot.pause()
        await screen.table.remove()
        app.post_message(Bridge.DiskUpdated(report))
        await pilot.pause()
        await pilot.pause()


async def test_status_reaching_a_details_pane_before_its_text_or_after_it_is_gone() -> None:
    """The app gives every status to each details pane on the stack. A pane is in its screen
    (screen.query finds it) before its own text is composed, and stays in it a moment after
    that text is torn down (children go first); either way a status raised NoMatches in the
    app's handler. Now the pane keeps what it was given and draws it when its text is there."""
    app = silent_app()
    async with app.run_test(size=(100, 30)) as pilot:
        app.post_message(Bridge.Connected(SNAPSHOT))
        want = {s.name: s.state for s in SNAPSHOT.services}
        await until(pilot, lambda: states(app) == want, "the snapshot in the table")
        app.open_detail("api")
        screen = await until(
            pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen, "the details"
        )
        await until(pilot, lambda: any("api" in p.text for p in screen.query(ServiceDetail)), "api")
        # Mounted, not yet composed: the pane is found, its text is not there yet.
        late = ServiceDetail(id="late")
        mounting = screen.mount(late)
        app.post_message(Bridge.StatusRefreshed(list(SNAPSHOT.services)))
        app.show_details()  # at once, before the pane's compose has run
        await mounting
        await until(pilot, lambda: late.text.startswith("api"), "what came before, drawn")
        # What run_test's exit does to the pane before the pane itself goes.
        await screen.detail.query_one("#detail-text").remove()
        app.post_message(Bridge.StatusRefreshed(list(SNAPSHOT.services)))
        app.post_message(Bridge.ServiceChanged(changed(SNAPSHOT.services[0], "stopped")))
        await pilot.pause()
        await pilot.pause()
