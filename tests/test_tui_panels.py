"""The TUI's disk and runs panels end to end: Pilot drives the real app against a real daemon."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from daemonkit import SLEEPER, build_tree, short_root
from test_runs_kit import SAMPLE, build_catalogs, install
from tuikit import until

from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.sizes import ByteStyle, format_bytes
from runyard.runtime.core.tree import RuntimeTree
from runyard.tui.app import RunyardApp
from runyard.tui.disk_screen import DiskScreen
from runyard.tui.runs_screen import RunsScreen

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_catalogs(tmp_path_factory)


@pytest.fixture
def heat_tree(catalogs):
    root = short_root()
    tree = RuntimeTree(root)
    init_tree(tree)
    install(tree, catalogs, "heat1d")
    (root.parent / "runyard.toml").write_text(f'root = "{root.name}"\n')
    yield tree
    shutil.rmtree(root.parent, ignore_errors=True)


async def test_disk_panel_shows_services_and_updates_after_a_write(root, daemons) -> None:
    tree = build_tree(root, {"alpha": SLEEPER, "beta": SLEEPER})
    daemons(tree).start()
    app = RunyardApp(tree.root, logs_warn=100_000)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.disk_report is not None, "the first disk report")
        await pilot.press("d")
        screen = await until(
            pilot, lambda: isinstance(app.screen, DiskScreen) and app.screen, "the disk screen"
        )
        assert isinstance(screen, DiskScreen)
        await until(pilot, lambda: {"alpha", "beta"} <= set(screen.shown), "both services")
        assert str(screen.table.get_cell("alpha", "name")).strip() == "alpha"
        before = screen.shown["alpha"]["data"]
        total_before = screen.shown["alpha"]["total"]
        assert not screen.warned("alpha")

        folder = tree.data_dir / "alpha"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "blob.bin").write_bytes(b"x" * 300_000)
        await until(
            pilot,
            lambda: screen.shown["alpha"]["data"] >= before + 300_000,
            "the data column to grow after the write",
        )
        assert screen.shown["alpha"]["total"] >= total_before + 300_000
        assert str(screen.table.get_cell("alpha", "data")) in ("293K", "294K", "295K")
        assert "▇" in str(screen.table.get_cell("alpha", "bar"))

        # Logs past the threshold: a marker that reads without colour.
        logs = tree.logs_dir / "beta"
        logs.mkdir(parents=True, exist_ok=True)
        (logs / "big.log").write_bytes(b"y" * 200_000)
        await until(pilot, lambda: screen.warned("beta"), "beta's logs flagged")
        await until(
            pilot,
            lambda: str(screen.table.get_cell("beta", "name")).startswith("!"),
            "the ! marker",
        )
        assert not str(screen.table.get_cell("alpha", "name")).startswith("!")
        assert "beta" in str(screen.query_one("#disk-status").render())

        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.services_screen, "back to services")


async def test_runs_panel_lists_a_sealed_run_shows_it_and_verifies(heat_tree, daemons) -> None:
    d = daemons(heat_tree).start()
    app = RunyardApp(heat_tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("u")
        screen = await until(
            pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen, "the runs screen"
        )
        assert isinstance(screen, RunsScreen)

        def seal() -> str:
            with d.client(timeout=60) as c:
                reply = c.run("heat1d", SAMPLE["inputs"], parameters=SAMPLE["parameters"])
                assert reply.status == "sealed", reply.result
                return reply.result.run_id

        run_id = await asyncio.to_thread(seal)
        # Listed from the run.* events, without a key press.
        await until(pilot, lambda: run_id in screen.runs, "the sealed run listed", timeout=30)
        row = screen.table.get_row(run_id)
        assert [str(c) for c in row[1:4]] == [
            "heat1d",
            screen.runs[run_id].engine_version,
            "sealed",
        ]
        assert str(row[4]) == run_id  # the RUN ID column (issue 15)
        assert screen.selected == run_id

        await pilot.press("enter")
        await until(pilot, lambda: "hashes" in screen.detail_text, "the run's details")
        assert run_id in screen.detail_text
        assert "outputs_hash" in screen.detail_text or "hash" in screen.detail_text
        # The file list is the run directory's ARTIFACT_INDEX: every entry, with role, size, sha256.
        run_dir = next(heat_tree.data_dir.glob(f"*/runs/{run_id}"))
        index = json.loads((run_dir / "ARTIFACT_INDEX.json").read_text())["files"]
        assert f"files ({len(index)}," in screen.detail_text
        shown = screen.detail_text.splitlines()
        for entry in index:
            row = next((x for x in shown if x.endswith(" " + entry["path"])), None)
            assert row is not None, (entry["path"], screen.detail_text)
            assert row.split()[:3] == [
                entry["role"],
                format_bytes(entry["size"], ByteStyle.COMPACT),
                entry["sha256"][:12],
            ]
        assert any(e["role"] == "artifact" for e in index)

        await pilot.press("v")
        await until(
            pilot,
            lambda: "verify" in screen.detail_text and "OK" in screen.detail_text,
            "the verify verdict",
            timeout=30,
        )
        assert f"verify {run_id}: OK" in screen.detail_text
        check_rows = [x for x in screen.detail_text.splitlines() if x.startswith("  ok ")]
        assert check_rows, screen.detail_text
        assert "FAIL" not in screen.detail_text

        await pilot.press("p")
        await until(
            pilot, lambda: "REPLAYABLE" in screen.detail_text, "the replay verdict", timeout=60
        )
        assert f"replay {run_id}: REPLAYABLE" in screen.detail_text
        assert "RUN_OUTPUT differences: 0" in screen.detail_text

        await pilot.press("g")
        await pilot.pause()
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.services_screen, "back to services")

    # Read-only: verify still works (it reads), replay is refused (it executes).
    ro = RunyardApp(heat_tree.root, read_only=True)
    async with ro.run_test(size=(80, 24)) as pilot:
        await pilot.press("u")
        screen = await until(
            pilot, lambda: isinstance(ro.screen, RunsScreen) and ro.screen, "the runs screen"
        )
        assert isinstance(screen, RunsScreen)
        await until(pilot, lambda: run_id in screen.runs, "the run listed")
        await pilot.press("p")
        await until(pilot, lambda: "read-only" in screen.detail_text, "replay refused")
        await pilot.press("v")
        await until(
            pilot, lambda: f"verify {run_id}: OK" in screen.detail_text, "verify in read-only"
        )


async def test_runs_v_and_p_act_on_the_run_shown_wherever_the_focus_is(heat_tree, daemons) -> None:
    """Finding: in the runs panel Tab moved the focus to the details invisibly, and v/p then
    acted on the cursor's row, another run than the one on screen (a wrong run was replayed).
    Now the details follow the cursor, the title names the run v/p act on, the focused pane
    is marked, and the list has a run-id column."""
    d = daemons(heat_tree).start()

    def seal() -> str:
        with d.client(timeout=60) as c:
            reply = c.run("heat1d", SAMPLE["inputs"], parameters=SAMPLE["parameters"])
            assert reply.status == "sealed", reply.result
            return reply.result.run_id

    older, newer = seal(), seal()
    app = RunyardApp(heat_tree.root)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("u")
        screen = await until(
            pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen, "the runs screen"
        )
        assert isinstance(screen, RunsScreen)
        await until(pilot, lambda: {older, newer} <= set(screen.runs), "both runs listed")
        assert str(screen.table.get_row(newer)[-1]) == newer  # the RUN ID column
        # The cursor is on the newest; its details show without enter.
        await until(pilot, lambda: f"run {newer}" in screen.detail_text, "newer's details")
        await pilot.press("enter", "down")
        await until(pilot, lambda: f"run {older}" in screen.detail_text, "older's details")
        title = screen.query_one("#runs-title")
        assert f"v/p act on {older}" in str(title.render())
        assert "focus: list" in str(title.render())

        await pilot.press("tab")
        box = screen.query_one("#runs-detail-box")
        await until(pilot, lambda: box.has_focus, "the details focused")
        assert "focus: details" in str(title.render())
        assert box.styles.border_left[0] == "thick"  # the focus shows
        shown = screen.shown_run
        await pilot.press("v")
        await until(pilot, lambda: "verify" in screen.detail_text, "the verdict", timeout=30)
        assert shown == older and f"verify {older}: OK" in screen.detail_text


def test_runs_show_reply_artifacts_decode_both_ways() -> None:
    """The artifacts field is new: a reply without it decodes (empty list), and a client that
    predates it decodes a reply that has it (wire messages tolerate unknown fields)."""
    import msgspec

    from runyard.protocol.messages import RunShowReply, decode_reply, encode
    from runyard.protocol.payloads import ArtifactEntry, RunDetails

    old_reply = b'{"reply":"runs.show","id":"1","run":{"summary":{}}}'
    decoded = decode_reply(old_reply)
    assert isinstance(decoded, RunShowReply) and decoded.artifacts == []

    class OldRunShowReply(msgspec.Struct, tag_field="reply", tag="runs.show", kw_only=True):
        id: str = ""
        run: dict[str, object]

    entry = ArtifactEntry(path="artifacts/a.csv", size=3, sha256="ab" * 32, role="artifact")
    new = encode(RunShowReply(id="2", run=RunDetails(), artifacts=[entry]))
    assert msgspec.json.decode(new, type=OldRunShowReply).run["summary"]["run_id"] == ""
    assert decode_reply(new).artifacts == [entry]  # type: ignore[attr-defined]


def test_runs_show_artifacts_from_a_broken_index_are_empty(tmp_path) -> None:
    """Showing a run never fails on its index (verify is what reports a broken sealed run)."""
    from runyard.daemon.handlers.runs_show import artifact_entries

    assert artifact_entries(tmp_path) == []  # no index
    (tmp_path / "ARTIFACT_INDEX.json").write_text("{not json")
    assert artifact_entries(tmp_path) == []
    (tmp_path / "ARTIFACT_INDEX.json").write_text('{"files": [{"path": 3}, "x", {"path": "a"}]}')
    assert [e.path for e in artifact_entries(tmp_path)] == ["a"]
