#!/usr/bin/env python3
"""hello-http: a tiny HTTP service for the Runyard demo runtime.

Binds 127.0.0.1 only. The port comes from ``--port``, else ``$HELLO_PORT``, else 18080.

    GET /         the greeting from $HELLO_GREETING (default "hello from runyard")
    GET /healthz  200 "ok" (for readiness probes)
    GET /version  the version (1.1.0 and later)

One line per request goes to stdout. SIGTERM or SIGINT stops it cleanly (exit 0).
Dependency-free; ``examples/build_catalog.py`` stamps ``__version__`` when it packs the archive.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

__version__ = "1.1.0"

DEFAULT_PORT = 18080
DEFAULT_GREETING = "hello from runyard"
HOST = "127.0.0.1"


def version_tuple(text: str) -> tuple[int, ...]:
    """`1.1.0` -> (1, 1, 0); a non-numeric part ends the tuple (`1.2.0rc1` -> (1, 2))."""
    parts: list[int] = []
    for piece in text.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


#: GET /version exists from 1.1.0 on.
HAS_VERSION_ROUTE = version_tuple(__version__) >= (1, 1, 0)


class HelloHandler(BaseHTTPRequestHandler):
    """Answers GET and HEAD; every other method gets 405 from the base class."""

    server_version = f"hello-http/{__version__}"
    protocol_version = "HTTP/1.1"
    greeting = DEFAULT_GREETING

    def do_GET(self) -> None:
        self._route(send_body=True)

    def do_HEAD(self) -> None:
        self._route(send_body=False)

    def _route(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._reply(200, self.greeting, send_body)
        elif path == "/healthz":
            self._reply(200, "ok", send_body)
        elif path == "/version" and HAS_VERSION_ROUTE:
            self._reply(200, __version__, send_body)
        else:
            self._reply(404, "not found", send_body)

    def _reply(self, code: int, text: str, send_body: bool) -> None:
        body = (text + "\n").encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One line per request, on stdout."""
        code_text = str(getattr(code, "value", code))
        line = f'{self.client_address[0]} "{self.requestline}" {code_text}'
        print(line, flush=True)

    def log_error(self, format: str, *args: object) -> None:
        """Protocol errors (bad request lines, timeouts) go to stderr."""
        print(f"hello-http: {format % args}", file=sys.stderr, flush=True)


def parse_port(text: str, source: str) -> int:
    """A TCP port number; ValueError with a one-line reason naming ``source`` otherwise."""
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"{source}: {text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{source}: {port} is not within 1-65535")
    return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hello-http", description=__doc__.splitlines()[0])
    parser.add_argument("--port", help=f"TCP port on {HOST} (default $HELLO_PORT or 18080)")
    parser.add_argument("--version", action="version", version=f"hello-http {__version__}")
    args = parser.parse_args(argv)

    try:
        if args.port is not None:
            port = parse_port(args.port, "--port")
        elif os.environ.get("HELLO_PORT"):
            port = parse_port(os.environ["HELLO_PORT"], "HELLO_PORT")
        else:
            port = DEFAULT_PORT
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2
    HelloHandler.greeting = os.environ.get("HELLO_GREETING") or DEFAULT_GREETING

    try:
        server = ThreadingHTTPServer((HOST, port), HelloHandler)
    except OSError as exc:
        print(
            f"hello-http: cannot listen on {HOST}:{port}: {exc.strerror or exc}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    server.daemon_threads = True

    def stop(signum: int, _frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, so it must not run on this thread.
        print(f"hello-http: {signal.Signals(signum).name}, stopping", flush=True)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    print(f"hello-http {__version__} listening on http://{HOST}:{port}/", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    print("hello-http: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
