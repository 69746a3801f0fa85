"""Modal dialogs: a yes/no confirmation, a one-line input, the ensure form and the key help."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

__all__ = ["ConfirmDialog", "EnsureDialog", "HelpDialog", "InputDialog"]


class ConfirmDialog(ModalScreen[bool]):
    """``y``/``enter`` confirms, ``n``/``escape`` cancels; dismisses with the answer."""

    DEFAULT_CSS = """
    ConfirmDialog {
        align: center middle;
    }
    ConfirmDialog > Vertical {
        width: 60;
        max-width: 100%;
        height: auto;
        border: thick $warning;
        background: $surface;
        padding: 1 2;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="question")
            yield Static("[b]y[/b] yes    [b]n[/b] / [b]esc[/b] no", id="choices")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class InputDialog(ModalScreen[str | None]):
    """One line of text: ``enter`` dismisses with it, ``escape`` with None."""

    DEFAULT_CSS = """
    InputDialog {
        align: center middle;
    }
    InputDialog > Vertical {
        width: 60;
        max-width: 100%;
        height: auto;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, prompt: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.prompt = prompt
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.prompt, id="prompt")
            yield Input(value=self.value, placeholder=self.placeholder, id="answer")
            yield Static("[b]enter[/b] ok    [b]esc[/b] cancel", id="choices")

    def on_mount(self) -> None:
        self.query_one("#answer", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class EnsureDialog(ModalScreen[tuple[str, str] | None]):
    """A version spec (``#answer``) and a catalog (empty: the one the tree used last); ``tab``
    moves between them, ``enter`` in either dismisses with both, ``escape`` with None."""

    DEFAULT_CSS = """
    EnsureDialog {
        align: center middle;
    }
    EnsureDialog > Vertical {
        width: 64;
        max-width: 100%;
        height: auto;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, service: str, version: str = "latest", catalog: str = "") -> None:
        super().__init__()
        self.service = service
        self.version = version
        self.catalog = catalog

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Ensure a version of [b]{self.service}[/b]", id="prompt")
            yield Static("version (latest, 1, 1.2, 1.2.3, ~1.2)")
            yield Input(value=self.version, id="answer")
            yield Static("catalog (path or URL; empty: the one used last)")
            yield Input(value=self.catalog, placeholder="the catalog used last", id="catalog")
            yield Static("[b]enter[/b] ok    [b]tab[/b] next field    [b]esc[/b] cancel")

    def on_mount(self) -> None:
        self.query_one("#answer", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        version = self.query_one("#answer", Input).value.strip()
        self.dismiss((version, self.query_one("#catalog", Input).value.strip()))

    def action_cancel(self) -> None:
        self.dismiss(None)


HELP = """\
[b]Services[/b]
  ↑ ↓        move            enter   logs of the service
  s          start           x       stop (asks first)
  r          restart         R       reload the config
  e          ensure a version (asks for it, and a catalog)
  i          details: why, setup, last stderr lines
  /          filter by name  esc     clear the filter
  L          all services' logs, interleaved, name-tagged
  d          disk usage      u       runs
  --read-only: s x r R e (and p) are off; the banner says so
[b]Logs[/b]
  f          follow on/off   t       timestamps on/off
  w          wrap on/off     /       search
  n / N      next / previous match
  F          regex filter    I       invert the filter
  ↑ PgUp Home  scroll up: stops following, nothing slides
  ↓ PgDn End   scroll down; End follows again
[b]Details[/b]  ↑ ↓ PgUp PgDn Home End scroll   i / esc back
[b]Disk[/b]   bytes per service, live; ! = logs over --logs-warn
[b]Runs[/b]
  ↑ ↓        move; the details follow    enter  details again
  tab        focus: list / details       g      refresh
  v          verify the run shown (reads only: allowed read-only)
  p          replay the run shown (executes: not in read-only)
[b]Anywhere[/b]
  esc        back            ?       this help
  ctrl+p     commands: every key, and start/stop/logs… of each service
  q          quit
"""


class HelpDialog(ModalScreen[None]):
    """The keys. The app installs one and shows it again each time (no compose per ``?``),
    and its background is opaque: the screen below (a log following 10,000 lines a second,
    say) is not blended into every frame while the help is up."""

    DEFAULT_CSS = """
    HelpDialog {
        align: center middle;
        background: $background;
    }
    HelpDialog > VerticalScroll {
        width: 78;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():  # taller than 24 rows: it scrolls
            yield Static(HELP.rstrip())

    def action_close(self) -> None:
        self.dismiss(None)
