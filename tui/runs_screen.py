"""Sealed and rejected runs: a list, one run's details, and verify / replay per check.

The list comes from ``runs.list`` (refreshed on ``run.*`` events and on ``g``); the details
pane follows the cursor: ``runs.show``'s hashes and the run directory's file list (its
ARTIFACT_INDEX: role, size, sha256 and path of every file); ``v`` verifies (it only reads:
allowed in read-only mode); ``p`` replays (it re-executes the engine: refused in read-only mode).

``v`` and ``p`` act on the run whose details are shown, which the title line names, wherever
the focus is (Tab moves it between the list and the details; the focused pane has a thick
accent edge): once, Tab moved the focus to the details invisibly and ``v``/``p`` acted on the
cursor's row, another run than the one on screen (a wrong run was replayed).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Static

from runyard.protocol.client import ClientError
from runyard.protocol.messages import RunShowReply
from runyard.protocol.payloads import Check, ReplayReport, RunSummary, VerifyReport
from runyard.runtime.core.sizes import ByteStyle, format_bytes

from .banner import Banner
from .footer import KeysFooter
from .literal import literal as escape

if TYPE_CHECKING:
    from .host import ScreenHost

__all__ = ["RunsScreen", "check_lines", "detail_lines", "file_lines", "replay_lines"]

COLUMNS = (
    ("time", "TIME"),
    ("engine", "ENGINE"),
    ("version", "VERSION"),
    ("status", "STATUS"),
    ("run_id", "RUN ID"),
)
STATUS_STYLES = {"sealed": "green", "rejected": "bold red"}
#: Under NO_COLOR (Textual turns colours into greys: red is dark grey on dark grey) the same
#: words are told by attributes: the table's styles, and the details' colour tags.
MONO_STATUS_STYLES = {"sealed": "bold", "rejected": "bold reverse"}
_MONO_TAGS = {"bold red": "bold reverse", "green": "bold"}
_COLOUR_TAG = re.compile(r"(?<!\\)\[(/?)(bold red|green)\]")


def mono_markup(markup: str) -> str:
    """``markup`` with its colour tags as attributes (NO_COLOR)."""
    return _COLOUR_TAG.sub(lambda m: f"[{m.group(1)}{_MONO_TAGS[m.group(2)]}]", markup)


READ_ONLY_REPLAY = (
    "read-only: replay re-executes the engine, so it is disabled (v verify only reads)"
)


def short_time(summary: RunSummary) -> str:
    """``2024-05-01 12:00:03`` from started_at, else from the run id (it starts with the time)."""
    at = summary.started_at
    if len(at) >= 19 and at[10] in "T ":
        return at[:10] + " " + at[11:19]
    rid = summary.run_id
    if len(rid) >= 15 and rid[8] == "T":
        return f"{rid[:4]}-{rid[4:6]}-{rid[6:8]} {rid[9:11]}:{rid[11:13]}:{rid[13:15]}"
    return at or "-"


def check_lines(checks: list[Check]) -> list[str]:
    """One markup line per check: a word (ok / FAIL / skip) as well as a colour."""
    out = []
    for c in checks:
        if c.skipped:
            mark = "[dim]skip[/dim]"
        elif c.ok:
            mark = "[green]ok  [/green]"
        else:
            mark = "[bold red]FAIL[/bold red]"
        detail = escape(c.detail)
        out.append(f"  {mark} {escape(c.name)}" + (f"  [dim]{detail}[/dim]" if detail else ""))
    return out


def verify_lines(run_id: str, report: VerifyReport) -> list[str]:
    verdict = "[green]OK[/green]" if report.ok else "[bold red]FAILED[/bold red]"
    return [f"[b]verify {escape(run_id)}: {verdict}[/b]", *check_lines(report.checks)]


def _size(size: int | None) -> str:
    return "absent" if size is None else f"{size} bytes"


def replay_lines(run_id: str, report: ReplayReport) -> list[str]:
    good = report.replayable
    verdict = "[green]REPLAYABLE[/green]" if good else "[bold red]NOT REPLAYABLE[/bold red]"
    lines = [f"[b]replay {escape(run_id)}: {verdict}[/b]"]
    if report.reason:
        lines.append(f"  reason: {escape(report.reason)}")
    diffs = report.differences
    lines.append(
        f"  [{'green' if not diffs else 'bold red'}]RUN_OUTPUT differences: {len(diffs)}[/]"
    )
    if report.value_differences:  # a daemon that sends the values: both, side by side
        for d in report.value_differences:
            lines.append(f"    {escape(d.path)}")
            lines.append(f"      original: {escape(d.original)}")
            lines.append(f"      replayed: {escape(d.replayed)}")
    else:
        lines += [f"    {escape(d)}" for d in diffs]
    art = report.artifact_differences
    if art:
        lines.append(f"  artifact differences (informational): {len(art)}")
        sizes = {f.path: (f.original_size, f.replayed_size) for f in report.file_differences}
        for d in art:
            old, new = sizes.get(d, (None, None))
            shown = f" ({_size(old)} -> {_size(new)})" if d in sizes else ""
            lines.append(f"    {escape(d)}{escape(shown)}")
    if report.replay_id:
        lines.append(f"  replay id: {escape(report.replay_id)}")
    if report.verify.checks:
        lines.append("  verify before replay:")
        lines += ["  " + line for line in check_lines(report.verify.checks)]
    return lines


def _hashes(doc: Any, path: str, out: list[tuple[str, str]]) -> None:
    """Every ``*hash`` / ``sha256`` string in ``doc`` (a sealed run's own JSON document), with
    where it was found."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(value, str) and ("hash" in str(key) or str(key) == "sha256"):
                out.append((where, value))
            else:
                _hashes(value, where, out)
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            _hashes(value, f"{path}[{i}]", out)


def _files(doc: Any, out: list[dict[str, Any]]) -> None:
    """Every ``{path, sha256|size}`` record in ``doc`` (artifact lists of a sealed run's JSON)."""
    if isinstance(doc, dict):
        if isinstance(doc.get("path"), str) and ("sha256" in doc or "size" in doc):
            out.append(doc)
            return
        for value in doc.values():
            _files(value, out)
    elif isinstance(doc, list):
        for value in doc:
            _files(value, out)


#: Hex digits of a file's sha256 shown in the list (the full one is in ARTIFACT_INDEX.json).
SHA_SHOWN = 12

#: The sealed run's own JSON documents its details show (engine-shaped, so plain JSON).
DOCUMENTS = ("run_input", "run_output", "run_meta")


def file_lines(shown: RunShowReply) -> list[str]:
    """The run directory's files from ``runs.show``'s ARTIFACT_INDEX entries: role, size, the start of
    the sha256 and the path, in columns that fit 80 cells; from an older daemon (no entries),
    the file records found in the run's documents."""
    entries = shown.artifacts
    if not entries:
        files: list[dict[str, Any]] = []
        for part in DOCUMENTS:
            _files(getattr(shown.run, part), files)
        lines = ["[b]files[/b]"]
        for f in files:
            extra = " ".join(
                escape(str(f[k])) for k in ("role", "size", "sha256") if f.get(k) not in (None, "")
            )
            lines.append(f"  {escape(str(f['path']))}  [dim]{extra}[/dim]")
        return lines + ([] if files else ["  (no file list: ARTIFACT_INDEX.json unreadable)"])
    total = sum(e.size for e in entries if e.size is not None)
    lines = [
        f"[b]files[/b] ({len(entries)}, {format_bytes(total, ByteStyle.COMPACT)}; role size sha256 path)"
    ]
    for e in entries:
        lines.append(
            f"  {escape(e.role or '-'):<10} "
            f"{format_bytes(e.size, ByteStyle.COMPACT) if e.size is not None else '?':>6} "
            f"[dim]{escape(e.sha256[:SHA_SHOWN]) or '-':<{SHA_SHOWN}}[/dim] "
            f"{escape(e.path)}"
        )
    return lines


def detail_lines(shown: RunShowReply) -> list[str]:
    run = shown.run
    summary = run.summary
    lines = [f"[b]run {escape(summary.run_id or '?')}[/b]"]
    for key in ("engine", "engine_version", "status", "project_id", "started_at", "duration"):
        value = getattr(summary, key)
        if value not in (None, ""):
            lines.append(f"  {key}: {escape(str(value))}")
    if summary.signed:
        lines.append("  signed: yes")
    if summary.path:
        lines.append(f"  run_dir: {escape(summary.path)}")
    hashes: list[tuple[str, str]] = []
    for part in DOCUMENTS:
        _hashes(getattr(run, part), part, hashes)
    lines.append("[b]hashes[/b]")
    lines += [f"  {escape(w)}: {escape(h)}" for w, h in hashes] or ["  (none recorded)"]
    lines += file_lines(shown)
    outputs = run.run_output.get("outputs")
    if isinstance(outputs, dict):
        lines.append("[b]outputs[/b]")
        lines += [f"  {escape(str(k))}: {escape(str(v))}" for k, v in outputs.items()]
    return lines


class RunsScreen(Screen[None]):
    DEFAULT_CSS = """
    RunsScreen #runs-title, RunsScreen #runs-status {
        height: 1;
        background: $boost;
        padding: 0 1;
    }
    RunsScreen DataTable {
        height: 1fr;
        min-height: 4;
        border-left: blank;
    }
    RunsScreen DataTable:focus {
        border-left: thick $accent;
    }
    RunsScreen #runs-detail-box {
        height: 2fr;
        border-top: solid $accent;
        border-left: blank;
    }
    RunsScreen #runs-detail-box:focus {
        border-top: thick $accent;
        border-left: thick $accent;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("g", "refresh_runs", "Refresh"),
        Binding("v", "verify", "Verify"),
        Binding("p", "replay", "Replay"),
        Binding("tab", "app.focus_next", "Details/list", show=False),
        # Read-only: p is hidden from the footer (check_action) and this says why.
        Binding("p", "replay_refused", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, RunSummary] = {}
        #: What the detail pane shows, as plain text (for tests and the curious).
        self.detail_text = ""
        #: The run whose details are shown: what v and p act on.
        self.shown_run: str | None = None

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        yield Static("runs", id="runs-title")
        table: DataTable[Any] = DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield table
        with VerticalScroll(id="runs-detail-box"):
            yield Static("", id="runs-detail")
        yield Static("loading runs…", id="runs-status")
        yield KeysFooter()

    @property
    def runyard(self) -> ScreenHost:
        return cast("ScreenHost", self.app)

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one("#runs", DataTable)

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.table.add_column(label, key=key)
        self.table.focus()
        self.action_refresh_runs()
        self._title()

    def on_descendant_focus(self) -> None:
        self._title()

    def _title(self) -> None:
        """Which pane has the focus, and which run v and p act on."""
        box = self.query_one("#runs-detail-box", VerticalScroll)
        where = "details" if box.has_focus else "list"
        target = f"v/p act on {self.shown_run}" if self.shown_run else "no run selected"
        text = f"runs · {target} · focus: {where} (tab)"
        self.query_one("#runs-title", Static).update(escape(text))

    def _status(self, text: str) -> None:
        self.query_one("#runs-status", Static).update(text)

    def _detail(self, lines: list[str]) -> None:
        markup = "\n".join(lines)
        if self.app.no_color:
            markup = mono_markup(markup)
        self.detail_text = Text.from_markup(markup).plain
        self.query_one("#runs-detail", Static).update(markup)
        self.query_one("#runs-detail-box", VerticalScroll).scroll_home(animate=False)

    @property
    def selected(self) -> str | None:
        table = self.table
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        except Exception:
            return None
        return key

    # --- the list -------------------------------------------------------------------------------

    def action_refresh_runs(self) -> None:
        self.run_worker(self._load(), group="runs-list", exclusive=True, exit_on_error=False)

    async def _load(self) -> None:
        try:
            runs = await self.runyard.bridge.runs_list()
        except ClientError as exc:
            self._status(f"runs: {exc}")
            return
        self.show_runs(runs)

    def show_runs(self, runs: list[RunSummary]) -> None:
        keep = self.selected
        table = self.table
        table.clear()
        self.runs = {}
        styles = MONO_STATUS_STYLES if self.app.no_color else STATUS_STYLES
        for r in reversed(runs):  # newest first
            rid = r.run_id
            if not rid or rid in self.runs:
                continue
            self.runs[rid] = r
            status = r.status or "?"
            table.add_row(
                short_time(r),
                r.engine,
                r.engine_version or "-",
                Text(status, style=styles.get(status, "")),
                rid,
                key=rid,
            )
        if keep in self.runs:
            table.move_cursor(row=table.get_row_index(keep))
        sealed = sum(1 for r in self.runs.values() if r.status == "sealed")
        self._status(f"{sealed} sealed · {len(self.runs) - sealed} rejected")

    # --- one run --------------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#runs")
    @on(DataTable.RowSelected, "#runs")
    def _selected(self, event: DataTable.RowHighlighted | DataTable.RowSelected) -> None:
        rid = event.row_key.value
        if rid is not None and (rid != self.shown_run or isinstance(event, DataTable.RowSelected)):
            self.shown_run = rid
            self._title()
            self.run_worker(self._show(rid), group="runs-one", exclusive=True, exit_on_error=False)

    @property
    def target(self) -> str | None:
        """The run v and p act on: the one whose details are shown."""
        return self.shown_run if self.shown_run in self.runs else self.selected

    async def _show(self, rid: str) -> None:
        summary = self.runs.get(rid)
        if summary is not None and summary.status == "rejected":
            lines = [f"[b]run {escape(rid)}: [bold red]rejected[/bold red][/b]"]
            for key in ("engine", "engine_version", "started_at", "reason", "path"):
                if value := getattr(summary, key):
                    lines.append(f"  {key}: {escape(str(value))}")
            self._detail(lines)
            return
        self._detail([f"loading {escape(rid)}…"])
        try:
            run = await self.runyard.bridge.runs_show(rid)
        except ClientError as exc:
            self._detail([f"[bold red]runs.show {escape(rid)} failed:[/] {escape(str(exc))}"])
            return
        self._detail(detail_lines(run))

    def action_verify(self) -> None:
        rid = self.target
        if rid is None:
            self.notify("no run selected", severity="warning")
            return
        self.run_worker(self._verify(rid), group="runs-one", exclusive=True, exit_on_error=False)

    async def _verify(self, rid: str) -> None:
        self._detail([f"verifying {escape(rid)}…"])
        try:
            report = await self.runyard.bridge.verify(rid)
        except ClientError as exc:
            self._detail([f"[bold red]verify {escape(rid)} failed:[/] {escape(str(exc))}"])
            return
        self._detail(verify_lines(rid, report))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "replay":
            return not self.runyard.read_only
        if action == "replay_refused":
            return self.runyard.read_only
        return True

    def action_replay_refused(self) -> None:
        self.notify(READ_ONLY_REPLAY, severity="warning")
        self._detail([escape(READ_ONLY_REPLAY)])

    def action_replay(self) -> None:
        if self.runyard.read_only:
            self.action_replay_refused()
            return
        rid = self.target
        if rid is None:
            self.notify("no run selected", severity="warning")
            return
        self.run_worker(self._replay(rid), group="runs-one", exclusive=True, exit_on_error=False)

    async def _replay(self, rid: str) -> None:
        self._detail([f"replaying {escape(rid)} (re-executes the engine)…"])
        try:
            report = await self.runyard.bridge.replay(rid)
        except ClientError as exc:
            self._detail([f"[bold red]replay {escape(rid)} failed:[/] {escape(str(exc))}"])
            return
        self._detail(replay_lines(rid, report))

    def action_back(self) -> None:
        self.dismiss(None)
