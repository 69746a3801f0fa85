"""One entry per state-changing action: the only writer of action records to the audit trail.

Every action that changes a tree or a prefix (an ensure, a gc, a run and its seal, a replay, a
bundle install/upgrade/rollback, a key generated, the daemon's start/stop/restart/reload/
shutdown/signal) is recorded by ``record_action``, directly or through ``audited``; nothing else
calls ``runtime.audit.record`` (tests/test_audit_once.py holds that line).

**Once, whichever way it came.** An action is recorded where it is done: ``ensure_service``,
``collect_garbage``, ``execute_and_seal``, ``replay_run`` and the bundle installer open an
``audited`` block themselves, so the CLI's local path and the daemon's handler (which call the
same functions) write the same entry. The daemon's dispatch opens a ``request_scope`` around
each request and writes its own entry (``daemon/handlers/audited.py``) only when nothing inside
the request wrote one: a start or a stop, or a run refused before it began. Scopes nest (an
``audited`` block inside a request, or inside another block): the innermost entry written
marks every enclosing scope as recorded, so the outer one does not write again. A scope is a
context variable, so a worker thread started with ``asyncio.to_thread`` (which copies the
context) records into the request that started it.

**Who.** ``actor`` defaults to the nearest scope's (the daemon's client); outside any, the
appender's default (this process's uid and ``cli``).

**When the trail cannot be written.** An entry that cannot be appended is a warning on the
``runyard.audit`` logger (the daemon's log; stderr for a command) and the action stands, unless
the block is ``strict`` (the bundle installer: a switch that leaves no trace is refused).
A failed action's entry never hides the failure itself: the exception goes on as it was.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from runyard.runtime.core.errors import AuditUnwritten, RunyardError
from runyard.runtime.ops.audit import audit_path, record

__all__ = [
    "AuditScope",
    "AuditUnwritten",
    "AuditedAction",
    "audited",
    "record_action",
    "request_scope",
]

_log = logging.getLogger("runyard.audit")
#: Longest error message kept in an entry's detail.
ERROR_CHARS = 300


class AuditScope(msgspec.Struct):
    """A request or an action in progress: who acts, and whether its entry is written."""

    actor: dict[str, Any] | None = None
    parent: AuditScope | None = None
    recorded: bool = False

    def who(self) -> dict[str, Any] | None:
        scope: AuditScope | None = self
        while scope is not None:
            if scope.actor is not None:
                return scope.actor
            scope = scope.parent
        return None

    def mark_recorded(self) -> None:
        scope: AuditScope | None = self
        while scope is not None:
            scope.recorded = True
            scope = scope.parent


_scope: contextvars.ContextVar[AuditScope | None] = contextvars.ContextVar(
    "runyard_audit_scope", default=None
)


@contextlib.contextmanager
def request_scope(actor: dict[str, Any] | None) -> Iterator[AuditScope]:
    """Run a request's handler in a scope naming ``actor``; ``recorded`` tells afterwards whether
    an action inside it wrote its entry (then the request needs none of its own)."""
    scope = AuditScope(actor, _scope.get())
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def record_action(
    logs_dir: str | os.PathLike[str],
    action: str,
    *,
    target: str = "",
    result: str = "ok",
    detail: dict[str, Any] | None = None,
    actor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Append the entry of one action and mark the enclosing scopes as recorded.

    Raises ``OSError`` when the log cannot be written (``audited`` and the daemon's writer
    catch it and say so).
    """
    scope = _scope.get()
    if actor is None and scope is not None:
        actor = scope.who()
    entry = record(logs_dir, action, target=target, result=result, detail=detail, actor=actor)
    if scope is not None:
        scope.mark_recorded()
    return entry


def result_of(exc: BaseException) -> str:
    """The ``result`` of an action that raised ``exc``: the daemon's error codes."""
    if isinstance(exc, RunyardError):
        return "failed"
    if isinstance(exc, Exception):
        return "internal"
    return "interrupted"  # KeyboardInterrupt, a cancelled task


class AuditedAction(msgspec.Struct):
    """The entry an ``audited`` block writes when it ends; the block fills it in as it learns."""

    logs_dir: Path
    action: str
    target: str = ""
    detail: dict[str, Any] = msgspec.field(default_factory=dict)
    #: ``ok`` unless the block says otherwise (``rejected``); an exception sets the error code.
    result: str = "ok"
    #: False: nothing changed (an install of what is already current): no entry.
    changed: bool = True
    strict: bool = False
    #: This block's scope: an entry written inside it (or by ``commit``) marks it recorded.
    scope: AuditScope = msgspec.field(default_factory=AuditScope)

    def commit(self) -> None:
        """Write the entry now (under a lock the block holds, so entries keep the order of
        what they record); the block's end then writes nothing more."""
        try:
            record_action(
                self.logs_dir,
                self.action,
                target=self.target,
                result=self.result,
                detail=self.detail,
            )
        except OSError as exc:
            where = audit_path(self.logs_dir)
            if self.strict and self.result == "ok":
                self.scope.mark_recorded()
                raise AuditUnwritten(
                    f"{self.action} {self.target} done, but {where} cannot be appended: "
                    f"{exc.strerror or exc}"
                ) from None
            _log.warning(
                "audit: cannot append %s %s to %s: %s", self.action, self.target, where, exc
            )
            self.scope.mark_recorded()  # said once: no enclosing scope tries again


@contextlib.contextmanager
def audited(
    logs_dir: str | os.PathLike[str],
    action: str,
    *,
    target: str = "",
    detail: dict[str, Any] | None = None,
    error_key: str = "error",
    strict: bool = False,
    refusal_needs_log: bool = False,
    needs_log: bool = False,
) -> Iterator[AuditedAction]:
    """Record the action done in the block once, when it ends (or at ``commit()``): ``ok`` (or
    the ``result`` the block set), or, when it raises, the error code and its message under
    ``detail[error_key]``.

    ``strict``: when the entry of a successful action cannot be written, raise
    ``AuditUnwritten`` instead of a warning. ``refusal_needs_log``: write a refusal only into
    a ``logs_dir`` that exists (a bundle refused before anything was installed leaves no
    ``logs/`` behind); ``needs_log``: write nothing either way unless it exists (a key
    generated with no tree around is no tree's action).
    """
    scope = AuditScope(parent=_scope.get())
    act = AuditedAction(
        Path(logs_dir), action, target, dict(detail or {}), strict=strict, scope=scope
    )
    refusal_needs_log = refusal_needs_log or needs_log
    if needs_log and not act.logs_dir.is_dir():
        act.changed = False
    token = _scope.set(scope)
    try:
        yield act
    except BaseException as exc:
        if scope.recorded or (refusal_needs_log and not act.logs_dir.is_dir()):
            raise
        if act.result == "ok":  # else the block described its refusal itself (``rejected``)
            act.result = result_of(exc)
            act.detail[error_key] = (str(exc) or type(exc).__name__)[:ERROR_CHARS]
        act.commit()
        raise
    finally:
        _scope.reset(token)
    if act.changed and not scope.recorded:
        act.commit()
