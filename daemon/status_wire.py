"""What a status reply puts on the wire, encoded ahead: a status of 50 services is the hottest
request (the TUI asks every 2 s, scripts poll it).

Each runner keeps its ``ServiceStatus`` until it changes, and with it that status's JSON, encoded
on first use (``ShownStatus``). The reply is an ``EncodedStatusReply``: ``StatusReply``'s fields,
each service the JSON already held (``msgspec.Raw``, copied in as it is): one copy of bytes
encoded before, not 50 encodings. A client decodes it as the ``StatusReply`` it is.

A service's JSON leaves out the fields at their default (``omit_defaults``): a status of 50
idle services is 19 KB instead of 30, and a client decodes it in about two thirds of the time.
Every client fills in the same defaults: they are part of the wire, and never changed (only
``name`` was ever required, and no default ever changed; the protocol's rule already: a new
field gets a default).

Both structs are derived from the protocol's with ``msgspec.defstruct`` (fields, names,
defaults), so a field added there is sent here without a line written twice.
"""

from __future__ import annotations

from typing import Any

import msgspec

from runyard.protocol.messages import Reply, ServiceStatus, StatusReply

__all__ = ["EncodedStatusReply", "ShownStatus"]

_encoder = msgspec.json.Encoder()


def _fields(struct: type[msgspec.Struct], skip: frozenset[str] = frozenset()) -> list[Any]:
    """``struct``'s fields as ``defstruct`` takes them (name, type, field with its defaults)."""
    out: list[Any] = []
    for f in msgspec.structs.fields(struct):
        if f.name in skip:
            continue
        spec = msgspec.field(name=f.encode_name)
        if f.default is not msgspec.NODEFAULT:
            spec = msgspec.field(default=f.default, name=f.encode_name)
        elif f.default_factory is not msgspec.NODEFAULT:
            spec = msgspec.field(default_factory=f.default_factory, name=f.encode_name)
        out.append((f.name, f.type, spec))
    return out


#: ServiceStatus, encoded without the fields at their default.
_CompactStatus: Any = msgspec.defstruct(
    "CompactStatus", _fields(ServiceStatus), omit_defaults=True, module=__name__
)

#: StatusReply with ``services: list[msgspec.Raw]``.
EncodedStatusReply: Any = msgspec.defstruct(
    "EncodedStatusReply",
    [
        (name, list[msgspec.Raw] if name == "services" else kind, spec)
        for name, kind, spec in _fields(StatusReply, frozenset(Reply.__struct_fields__))
    ],
    bases=(Reply,),
    tag=StatusReply.__struct_config__.tag,
    kw_only=True,
    module=__name__,
)


class ShownStatus:
    """A runner's ``ServiceStatus`` and, once asked, its JSON (both kept until it changes)."""

    __slots__ = ("_json", "status")

    def __init__(self, status: ServiceStatus) -> None:
        self.status = status
        self._json: msgspec.Raw | None = None

    @property
    def json(self) -> msgspec.Raw:
        if self._json is None:
            compact = _CompactStatus(*msgspec.structs.astuple(self.status))
            self._json = msgspec.Raw(_encoder.encode(compact))
        return self._json
