"""``GET /healthz`` and ``GET /readyz`` on 127.0.0.1 for orchestrators and load balancers.

healthz answers 200 while the daemon runs. readyz answers 200 when every autostart service is
ready (running, and its probe passed if it has one), 503 otherwise, with a JSON body per service.
Only loopback is bound: this is for a local agent, not the network.
"""

from __future__ import annotations

import asyncio
import json

from .supervisor import Supervisor

__all__ = ["HealthServer", "readiness_report"]


def readiness_report(sup: Supervisor) -> tuple[bool, dict[str, object]]:
    services = {}
    ok = True
    for name, runner in sup.runners.items():
        ready = runner.is_ready()
        services[name] = {
            "state": str(runner.state),
            "ready": ready,
            "autostart": runner.spec.autostart,
        }
        if runner.spec.autostart and not ready:
            ok = False
    return ok, {"ready": ok, "services": services}


class HealthServer:
    def __init__(self, sup: Supervisor, port: int) -> None:
        self.sup = sup
        self.port = port
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            # Drain the headers; we need none of them.
            while (line := await asyncio.wait_for(reader.readline(), timeout=5)) not in (
                b"\r\n",
                b"\n",
                b"",
            ):
                if len(line) > 8192:
                    break
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if parts[:1] != ["GET"]:
                status, body = 405, {"error": "only GET"}
            elif path == "/healthz":
                status, body = 200, {"status": "ok"}
            elif path == "/readyz":
                ok, body = readiness_report(self.sup)
                status = 200 if ok else 503
            else:
                status, body = 404, {"error": "not found"}
            data = json.dumps(body, sort_keys=True).encode()
            reason = {
                200: "OK",
                404: "Not Found",
                405: "Method Not Allowed",
                503: "Service Unavailable",
            }[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
