"""``runyard up | daemon | shutdown | status | start | stop | restart | reload | logs | health``:
the commands that talk to (or are) the daemon. They use only the client library."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from runyard.protocol.client import Client, DaemonUnreachable
from runyard.protocol.messages import LogEvent, LogLine, ServiceStatus
from runyard.runtime.core.errors import StartFailed
from runyard.runtime.core.sizes import format_bytes

from . import daemon_cmd
from .common import UsageError, missing_file, open_tree
from .daemon_cmd import license_option
from .log_text import Render, for_terminal, json_for_terminal
from .output import print_json, print_table, stdout_closed

__all__ = ["register"]

UP_TIMEOUT = 20.0
#: The documented exit code for "the daemon is unreachable" (daemon/cli/__init__.py).
EXIT_UNREACHABLE = 3
#: ``logs -f`` looks this often whether its reader is still there while no line comes.
FOLLOW_CHECK_SECS = 1.0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    daemon_cmd.register(sub, common)
    p = sub.add_parser(
        "up", parents=[common], help="start the daemon in the background (idempotent)"
    )
    license_option(p)
    p.set_defaults(handler=cmd_up)
    p = sub.add_parser("shutdown", parents=[common], help="stop every service, then the daemon")
    p.set_defaults(handler=cmd_shutdown)
    p = sub.add_parser("status", parents=[common], help="services: state, pid, uptime, readiness")
    p.add_argument("services", nargs="*", metavar="SVC", help="only these services (default: all)")
    p.set_defaults(handler=cmd_status)
    for name, helptext in (
        ("start", "start services"),
        ("stop", "stop services"),
        ("restart", "restart services"),
    ):
        p = sub.add_parser(name, parents=[common], help=helptext)
        p.add_argument("services", nargs="*", metavar="SVC", help="service names")
        p.add_argument("--all", action="store_true", help="every service")
        p.set_defaults(handler=cmd_action, action=name)
    p = sub.add_parser(
        "reload", parents=[common], help="re-read manifest and config; restart only what changed"
    )
    p.set_defaults(handler=cmd_reload)
    p = sub.add_parser(
        "logs",
        parents=[common],
        help="services' recent output (several: interleaved by time, tagged with the name)",
    )
    p.add_argument("services", nargs="*", metavar="SVC", help="service names")
    p.add_argument("--all", action="store_true", help="every service")
    p.add_argument("-n", type=int, default=50, help="lines per service (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--color",
        dest="render",
        action="store_const",
        const=Render.COLOR,
        help="keep the services' colour codes (SGR); other control characters stay escaped",
    )
    shown.add_argument(
        "--raw",
        dest="render",
        action="store_const",
        const=Render.RAW,
        help="print lines as the services wrote them, escape sequences included (by default "
        "control characters but tab are printed escaped, as \\x1b, and colour codes dropped, "
        "so a service cannot drive your terminal; --json is always exact)",
    )
    p.set_defaults(handler=cmd_logs, render=Render.SAFE)
    p = sub.add_parser(
        "health", parents=[common], help="exit 0 when every autostart service is ready"
    )
    p.set_defaults(handler=cmd_health)


def _client(args: argparse.Namespace, timeout: float = 10.0) -> Client:
    """A client that has said hello, so the daemon's audit trail names it (``runyard-cli``)."""
    # lenient: status, logs, stop and shutdown must work while runyard.toml has a syntax error
    # (the daemon runs with the copy it read); reload and up still refuse a broken file.
    client = Client(open_tree(args, lenient=True).root, timeout=timeout, client_name="runyard-cli")
    try:
        client.hello()
    except BaseException:
        client.close()
        raise
    return client


def cmd_up(args: argparse.Namespace) -> int:
    tree = open_tree(args).require()
    try:
        with Client(tree.root, timeout=2.0) as client:
            hello = client.hello()
        _say(
            args,
            {"pid": hello.pid, "started": False, "root": hello.root},
            f"daemon already running (pid {hello.pid})",
        )
        return _over_limit(tree.root)
    except DaemonUnreachable:
        pass
    argv = [sys.executable, "-m", "runyard.daemon", "daemon", "--root", str(tree.root)]
    project = args.project or ("runyard.toml" if os.path.isfile("runyard.toml") else None)
    if project:
        argv += ["--project", os.path.abspath(project)]
    if args.license:
        if not os.path.isfile(args.license):
            raise missing_file("--license", args.license)
        argv += ["--license", os.path.abspath(args.license)]
    err_path = tree.logs_dir / "runyard" / "daemon.stderr"
    err_path.parent.mkdir(parents=True, exist_ok=True)
    with open(os.devnull, "rb") as devnull, open(err_path, "ab") as err:
        proc = subprocess.Popen(
            argv, stdin=devnull, stdout=err, stderr=err, start_new_session=True, cwd=os.getcwd()
        )
    deadline = time.monotonic() + UP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = err_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise StartFailed(f"the daemon exited at start ({proc.returncode}): {tail[0]}")
        try:
            with Client(tree.root, timeout=0.5) as client:
                hello = client.hello()
            _say(
                args,
                {"pid": hello.pid, "started": True, "root": hello.root},
                f"daemon started (pid {hello.pid}) for {tree.root}",
            )
            return _over_limit(tree.root)
        except DaemonUnreachable:
            time.sleep(0.05)
    raise StartFailed(f"the daemon did not answer within {UP_TIMEOUT:.0f}s (see {err_path})")


def _capped(services: list[ServiceStatus]) -> list[ServiceStatus]:
    """The services the license keeps from running (their reason names max_services)."""
    return [s for s in services if s.state == "stopped" and "(max_services)" in s.reason]


def _over_limit(root: Path) -> int:
    """1 with one stderr line when the license keeps services from running, else 0."""
    with Client(root, timeout=5.0) as client:
        capped = _capped(client.status().services)
    if not capped:
        return 0
    more = f" (and {len(capped) - 1} more)" if len(capped) > 1 else ""
    print(f"runyard: {capped[0].name}: {capped[0].reason}{more}", file=sys.stderr)
    return 1


def _say(args: argparse.Namespace, data: object, text: str) -> None:
    if args.json:
        print_json(data)
    else:
        print(text)


def cmd_shutdown(args: argparse.Namespace) -> int:
    with _client(args, timeout=120.0) as client:
        reply = client.shutdown()
    _say(args, reply, f"stopped {len(reply.services)} service(s); daemon stopping")
    return 0


def _uptime(s: ServiceStatus) -> str:
    if s.started_at is None:
        return "-"
    secs = int(max(0, time.time() - s.started_at))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    if secs < 86400:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    return f"{secs // 86400}d{secs % 86400 // 3600:02d}h"


def _ready(s: ServiceStatus) -> str:
    """``-`` without a readiness probe, as ``--json`` says (null): running is not ready."""
    if s.ready is None:
        return "-"
    return "yes" if s.ready else "no"


def _info(s: ServiceStatus) -> str:
    """Why the service is as it is, then what it says of itself (sd_notify STATUS=)."""
    why = s.reason or (f"not answering: {s.live_detail}" if s.live is False else "")
    # Both may carry a service's own words (STATUS=, a probe's answer): never raw to a terminal.
    return for_terminal("; ".join(text for text in (why, s.notify_status) if text))


def print_statuses(services: list[ServiceStatus]) -> None:
    rows = [
        (
            s.name,
            s.state,
            _ready(s),
            s.pid or "-",
            _uptime(s),
            s.restarts,
            "-" if s.last_exit is None else s.last_exit,
            "-" if s.cpu_percent is None or s.pid is None else f"{s.cpu_percent:.1f}",
            "-" if s.rss is None or s.pid is None else format_bytes(s.rss),
            ",".join(str(p.port) for p in s.ports) or "-",
            s.containment or "-",
            _info(s),
        )
        for s in services
    ]
    print_table(
        [
            "NAME",
            "STATE",
            "READY",
            "PID",
            "UPTIME",
            "RESTARTS",
            "EXIT",
            "CPU%",
            "RSS",
            "PORTS",
            "CONTAINED",
            "INFO",
        ],
        rows,
        {3, 5, 6, 7, 8},
    )


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        reply = client.status(args.services)
    if args.json:
        print_json(reply.services)
    elif not reply.services:
        print("no services (runyard runtime ensure NAME --catalog FILE, then runyard reload)")
    else:
        print_statuses(reply.services)
        for s in reply.services:  # a limit set but enforced by nothing: said, never hidden
            if s.limits_note:
                print(f"{s.name}: {s.limits_note}")
    return 0


def cmd_action(args: argparse.Namespace) -> int:
    if not args.services and not args.all:
        raise UsageError(f"{args.action}: name a service or pass --all")
    with _client(args, timeout=300.0) as client:
        method = getattr(client, args.action)
        reply = method(args.services, all=args.all)
    if args.json:
        print_json(reply.services)
    else:
        print_statuses(reply.services)
    if args.action == "start" and reply.message:  # services the license keeps from running
        print(f"runyard: {reply.message}", file=sys.stderr)
        return 1
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    with _client(args, timeout=300.0) as client:
        reply = client.reload()
    _say(args, {"message": reply.message, "services": reply.services}, f"reloaded: {reply.message}")
    return 0


def _fmt_line(line: LogLine, tag: str = "", render: Render = Render.SAFE) -> str:
    ts = datetime.fromtimestamp(line.ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return f"{ts}Z {tag}{line.stream} {for_terminal(line.line, render)}"


class _LogPrinter:
    """Prints log lines once each (by seq per service); with several services, tagged."""

    def __init__(self, args: argparse.Namespace, names: list[str]) -> None:
        self.json = args.json
        self.render: Render = args.render
        self.tagged = args.all or len(names) > 1
        self.width = max((len(n) for n in names), default=0)
        self.last: dict[str, int] = {}

    def print(self, service: str, line: LogLine) -> None:
        if line.seq <= self.last.get(service, -1):
            return
        self.last[service] = line.seq
        if self.json:
            text = json_line(line) if not self.tagged else json_tagged(service, line)
        else:
            tag = f"{service.ljust(self.width)} | " if self.tagged else ""
            text = _fmt_line(line, tag, self.render)
        print(text, flush=True)


def _log_names(args: argparse.Namespace, client: Client) -> list[str]:
    if args.all:
        return [s.name for s in client.status().services]
    return list(dict.fromkeys(args.services))


def cmd_logs(args: argparse.Namespace) -> int:
    if args.n < 0:
        raise UsageError("-n must be >= 0")
    if not args.services and not args.all:
        raise UsageError("logs: name a service or pass --all")
    with _client(args) as client:
        names = _log_names(args, client)
        topics = ["log."] if args.all else [f"log.{n}" for n in names]
        stream = client.events(topics) if args.follow else None
        out = _LogPrinter(args, names)
        try:
            backlog, seen = [], {}
            for name in names:
                reply = client.logs_tail(name, n=args.n)
                backlog += [(name, line) for line in reply.lines]
                seen[name] = reply.last_seq
            for name, line in sorted(backlog, key=lambda item: (item[1].ts, item[0])):
                out.print(name, line)
            out.last.update(seen)  # -n 0 -f: only what comes next
            while stream is not None:
                event = stream.get(timeout=FOLLOW_CHECK_SECS)
                if event is None:
                    if stdout_closed():  # the reader left while no line came: end as if written
                        return 0
                    continue
                # A topic is a prefix: log.web also brings log.web2, which was not asked for.
                if isinstance(event, LogEvent) and (args.all or event.service in names):
                    for line in event.lines:
                        out.print(event.service, line)
        except KeyboardInterrupt:
            return 0
        finally:
            if stream is not None:
                stream.close()
    return 0


def json_tagged(service: str, line: LogLine) -> str:
    """One line of several services' logs as a JSON object naming its service."""
    fields = {"service": service, **msgspec.structs.asdict(line)}
    return json_for_terminal(msgspec.json.encode(fields).decode())


def json_line(line: LogLine) -> str:
    return json_for_terminal(msgspec.json.encode(line).decode())


def cmd_health(args: argparse.Namespace) -> int:
    try:
        with _client(args, timeout=5.0) as client:
            reply = client.status()
    except DaemonUnreachable as exc:
        # Exit 3 as every command says "no daemon"; --json still prints its verdict for scripts.
        if args.json:
            print_json({"healthy": False, "ready": False, "error": str(exc)})
        print(f"runyard: unhealthy: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    not_ready = [
        s.name
        for s in reply.services
        if s.autostart and not (s.state == "running" and s.ready is not False)
    ]
    capped = _capped(reply.services)
    ok = not not_ready and not capped
    data = {
        "healthy": True,
        "ready": ok,
        "not_ready": not_ready,
        "over_limit": {s.name: s.reason for s in capped},
    }
    text = "ready"
    if not_ready:
        text = f"not ready: {', '.join(not_ready)}"
    if capped:
        text += ("; " if not_ready else "not ready: ") + f"{capped[0].name}: {capped[0].reason}"
    _say(args, data, text if not ok else "ready")
    return 0 if ok else 1
