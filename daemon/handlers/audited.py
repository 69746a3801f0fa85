"""Which control actions go into the audit trail, and what each one records.

``AUDITED`` maps every request type that changes something to its action name and a function
of (request, reply) giving the target and the detail. Only names go in: never the inputs,
parameters or context of a run, never env values; a catalog URL, in the detail or in an error
message, is shown redacted (``user:***@host``, ``redact_url``). The
server records in one place (``ControlServer._dispatch``), after the handler, with the result:
``ok`` or the error code, unless the action recorded itself inside the request (an ensure, a
run, a replay: the library functions the CLI calls too, runtime/ops/audit_action.py): then the
request's entry here would be a second one, and none is written. What is left for these:
a request refused before the action began (the daemon shutting down, no such sealed run).

``AuditWriter`` appends off the event loop, in one thread so entries keep the order in which
requests finished; a failed append is logged (``audit: cannot append ...``) and the daemon
goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runyard.protocol import messages as m
from runyard.runtime.ops.audit import audit_path
from runyard.runtime.ops.audit_action import record_action

__all__ = ["AUDITED", "AuditWriter", "describe"]

Describe = Callable[[Any, m.Reply], tuple[str, dict[str, Any]]]


def _services(req: Any) -> str:
    return "all" if req.all else ",".join(req.services)


def _start(req: m.Start, reply: m.Reply) -> tuple[str, dict[str, Any]]:
    detail: dict[str, Any] = {}
    if isinstance(reply, m.ActionReply) and reply.message:
        detail["message"] = reply.message
    return _services(req), detail


def _stop(req: m.Stop, reply: m.Reply) -> tuple[str, dict[str, Any]]:
    return _services(req), {"wait": req.wait}


def _restart(req: m.Restart, reply: m.Reply) -> tuple[str, dict[str, Any]]:
    return _services(req), {}


def _reload(req: m.Reload, reply: m.Reply) -> tuple[str, dict[str, Any]]:
    summary = reply.message if isinstance(reply, m.ActionReply) else ""
    return "daemon", {"summary": summary} if summary else {}


def _shutdown(req: m.Shutdown, reply: m.Reply) -> tuple[str, dict[str, Any]]:
    return "daemon", {}


def _signal(req: m.Signal, reply: m.Reply) -> tuple[str, dict[str, Any]]:
    return req.service, {"signal": req.signal}


def _ensure(req: m.Ensure, reply: m.Reply) -> tuple[str, dict[str, Any]]:
    detail: dict[str, Any] = {"version_spec": req.version_spec}
    if req.catalog:
        from runyard.runtime.acquisition.urls import redact_url  # urllib.request: on use

        detail["catalog"] = redact_url(req.catalog)
    if isinstance(reply, m.EnsureReply):
        detail["version"] = reply.binary.version
    return req.name, detail


def _run(req: m.Run, reply: m.Reply) -> tuple[str, dict[str, Any]]:
    detail: dict[str, Any] = {"project_id": req.project_id, "signed": req.sign_key is not None}
    if req.from_runs:
        detail["from_runs"] = list(req.from_runs)
    if isinstance(reply, m.RunReply):
        detail["status"] = reply.status
        detail["run_id"] = reply.result.run_id
    return req.engine, detail


def _replay(req: m.ReplayRun, reply: m.Reply) -> tuple[str, dict[str, Any]]:
    detail: dict[str, Any] = {}
    if isinstance(reply, m.ReplayReply):
        detail["replayable"] = reply.report.replayable
    return req.run_dir, detail


AUDITED: dict[type[m.Request], tuple[str, Describe]] = {
    m.Start: ("start", _start),
    m.Stop: ("stop", _stop),
    m.Restart: ("restart", _restart),
    m.Reload: ("reload", _reload),
    m.Shutdown: ("shutdown", _shutdown),
    m.Signal: ("signal", _signal),
    m.Ensure: ("ensure", _ensure),
    m.Run: ("run", _run),
    m.ReplayRun: ("replay", _replay),
}


def describe(req: m.Request, reply: m.Reply) -> tuple[str, str, str, dict[str, Any]] | None:
    """(action, target, result, detail) of an audited request, None for the others."""
    entry = AUDITED.get(type(req))
    if entry is None:
        return None
    action, fn = entry
    try:
        target, detail = fn(req, reply)
    except Exception as exc:  # a describe bug must not lose the entry
        target, detail = "", {"describe_error": f"{type(exc).__name__}: {exc}"[:200]}
    result = "ok"
    if isinstance(reply, m.ErrorReply):
        result = reply.code
        # Errors name URLs redacted already; this keeps one we missed out of the trail too.
        from runyard.runtime.acquisition.urls import redact_url

        detail = {**detail, "error": redact_url(reply.message)[:300]}
    return action, target, result, detail


class AuditWriter:
    """Appends entries to ``logs/runyard/audit.jsonl`` in a thread of its own, in order."""

    def __init__(self, logs_dir: Path, log: logging.Logger) -> None:
        self.logs_dir = logs_dir
        self.log = log
        self.failures = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")

    def submit(
        self,
        action: str,
        *,
        target: str = "",
        result: str = "ok",
        detail: dict[str, Any] | None = None,
        actor: dict[str, Any] | None = None,
    ) -> Future[None]:
        return self._pool.submit(self.write, action, target, result, detail, actor)

    def write(
        self,
        action: str,
        target: str = "",
        result: str = "ok",
        detail: dict[str, Any] | None = None,
        actor: dict[str, Any] | None = None,
    ) -> None:
        """Append now, in the calling thread; log a failure instead of raising it."""
        try:
            record_action(
                self.logs_dir, action, target=target, result=result, detail=detail, actor=actor
            )
        except Exception as exc:
            self.failures += 1
            self.log.error(
                "audit: cannot append %s %s to %s: %s",
                action,
                target,
                audit_path(self.logs_dir),
                exc,
            )

    def close(self) -> None:
        """Wait for every submitted entry to be written."""
        self._pool.shutdown(wait=True)
