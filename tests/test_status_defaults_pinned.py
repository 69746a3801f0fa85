"""The status wire leaves out fields at their default (daemon/status_wire.py), so a client fills
them in from its own copy of ``ServiceStatus``: a default changed in one release would make an
older client read a different value than the daemon meant. These figures are the wire; a new
field is appended here with its default, an existing one is never changed."""

from __future__ import annotations

import gc

import msgspec

from runyard.daemon.status_wire import ShownStatus
from runyard.protocol.messages import ServiceStatus

PINNED = {
    "name": "x",
    "version": "",
    "kind": "service",
    "state": "stopped",
    "wanted": "down",
    "ready": None,
    "ready_detail": "",
    "pid": None,
    "pgid": None,
    "started_at": None,
    "restarts": 0,
    "last_exit": None,
    "last_exit_at": None,
    "reason": "",
    "next_start_in": None,
    "cpu_percent": None,
    "rss": None,
    "ports": [],
    "autostart": True,
    "depends_on": {},
    "live": None,
    "live_detail": "",
    "containment": "",
    "limits_note": "",
    "notify_status": "",
    "setup": {"bin": "", "restart": "", "max_restarts": None, "backoff": "", "limits": ""},
}


def test_service_status_defaults_never_change() -> None:
    got = msgspec.to_builtins(ServiceStatus(name="x"))
    assert list(got) == list(PINNED), "fields are only ever appended"
    assert got == PINNED


def test_a_compact_status_decodes_to_the_full_one() -> None:
    full = ServiceStatus(name="web", state="running", pid=42, restarts=3, ports=[])
    compact = bytes(ShownStatus(full).json)
    assert b'"version"' not in compact  # at its default: left off the wire
    assert msgspec.json.decode(compact, type=ServiceStatus) == full


def test_a_decoded_status_record_is_not_tracked_by_the_collector() -> None:
    """A client decodes 500 of these per status of a big box: tracked, they made the client's
    full collections (6-21 ms every ~70 calls, the bench's p99). Records hold only scalars,
    lists and dicts of scalars, so no cycle can go through one (msgspec ``gc=False``)."""
    status = msgspec.json.decode(b'{"name": "web", "state": "running"}', type=ServiceStatus)
    assert not gc.is_tracked(status)
