"""What the run handlers share: naming a sealed run by its directory or by its run id."""

from __future__ import annotations

from pathlib import Path

from runyard.protocol import messages as m

from .context import Context, HandlerError


def run_dir_of(ctx: Context, text: str) -> Path:
    # runtime.runs loads jsonschema and cryptography: only once runs are used.
    from runyard.runtime.runs import RunError, find_run
    from runyard.runtime.runs.layout import RUN_ID_RE

    path = Path(text)
    if path.is_absolute() and path.is_dir():
        return path
    if RUN_ID_RE.match(text):
        try:
            return Path(find_run(ctx.tree, text))
        except RunError as exc:
            raise HandlerError(m.ErrorCode.NOT_FOUND, str(exc)) from None
    raise HandlerError(
        m.ErrorCode.NOT_FOUND, f"no sealed run {text!r} (an absolute path or a run id)"
    )
