"""asyncio without the ssl module until something asks asyncio for TLS.

asyncio imports ssl as it is imported (``base_events``, ``selector_events`` and ``sslproto`` each
``try: import ssl``), and ssl maps libssl and libcrypto: about 4 MiB of an idle daemon's
resident memory (docs/ARCHITECTURE.md, "Idle footprint") for TLS the daemon does not do. Its
control socket is ZeroMQ, probes and the health endpoint are plain TCP, and a fetch (urllib, in
a worker thread) imports ssl by itself when a URL is https.

``import_asyncio()`` imports asyncio with ssl hidden, then gives each module that found no ssl
a stand-in: the first attribute asked of it imports the real ssl and puts it where asyncio's
own import would have (with ``sslproto.SSLAgainErrors``, which sslproto defines only when ssl
imported), so asyncio's TLS still works, loading ssl on first use. One question is answered
without loading it: ``ssl.SSLSocket`` while nothing imported ssl (asyncio asks it of every
socket handed to it, to refuse TLS ones) is a class no socket is an instance of, which is true
then: no ``SSLSocket`` exists before ssl is imported.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["import_asyncio"]

_took_stand_in: list[types.ModuleType] = []  # the modules that hold the stand-in


class _NoSSLSocket:
    """What ``ssl.SSLSocket`` is before ssl is imported: nothing is an instance of it."""


class _SSLOnDemand(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name == "SSLSocket" and "ssl" not in sys.modules:
            return _NoSSLSocket
        return getattr(_load_ssl(), name)


def _load_ssl() -> types.ModuleType:
    import ssl

    for module in _took_stand_in:
        module.ssl = ssl  # type: ignore[attr-defined]
        if module.__name__ == "asyncio.sslproto" and not hasattr(module, "SSLAgainErrors"):
            module.SSLAgainErrors = (ssl.SSLWantReadError, ssl.SSLSyscallError)  # type: ignore[attr-defined]
    _took_stand_in.clear()
    return ssl


def import_asyncio() -> None:
    """Import asyncio without ssl (see the module docstring); nothing when asyncio or ssl is
    already imported."""
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    before = set(sys.modules)
    sys.modules["ssl"] = None  # type: ignore[assignment]  # ``import ssl`` raises ImportError
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]
    stand_in = _SSLOnDemand("ssl", "ssl, imported on first use (runyard.daemon.lazy_ssl)")
    for name in sorted(set(sys.modules) - before):
        module = sys.modules[name]
        if module is not None and "ssl" in vars(module) and module.ssl is None:
            module.ssl = stand_in  # type: ignore[attr-defined]
            _took_stand_in.append(module)
