"""The Runyard TUI (Textual): ``runyard tui``. It talks to the daemon only through
``protocol.client``, from one bridge worker (``tui.bridge``)."""
