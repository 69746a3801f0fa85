"""Benchmark `tui`: `runyard tui` in tmux at 80x24 on a real daemon, one service logging 10,000
lines a second, its log view open and following.

* Key latency: a key goes in with tmux `send-keys`, then the pane is read with `capture-pane`
  until the change the key makes is on screen; latency = that moment - just before the key was
  sent (so it includes tmux, the pty and the terminal output, as a person sees it). Keys, in
  turn, one every 0.25 s: `t` (timestamps on/off) and `w` (wrap on/off), which re-render the
  5,000 kept lines, and `?` (the help, opened then closed), which draws over the following view;
  following stays on throughout. Target: p95 < 100 ms over all presses.
* Memory: the TUI process's RSS (psutil), sampled every 0.5 s through the same window (60 s;
  --quick: 10 s) after a warm-up (5 s; --quick: 3 s) in which the 5,000-line scrollback fills.
  Target: max RSS in the window < 1.2 x the RSS at the end of the warm-up.
* Anchor (the floor of this way of measuring): in the same kind of tmux pane, `tail -F` of the
  same service's log file with a bash `read` loop that prints the last key on the bottom row;
  the same polling, 40 presses (--quick: 20). Shown as a ratio, not judged.

tmux is driven through one control-mode client (`tmux -C`, with `no-output`), so polling costs
a command on a pipe, not a process per poll. The service is paced: 100 lines of ~90 bytes every
10 ms; the rate the daemon actually logged is printed. `--runs` does not apply (the window sets
the number of presses). The tree is built with tests/daemonkit.py (the tests' real-archive path)
under /tmp and removed afterwards, and the daemon, the TUI and tmux are stopped on every exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

RATE = 10_000
#: Lines per write of the flood service (one write every BATCH / RATE seconds).
BATCH = 100
TARGET_P95_MS = 100.0
RSS_GROWTH = 0.20
PRESS_EVERY = 0.25
#: A key whose change is not on screen after this long counts as this long (and as a miss).
PRESS_TIMEOUT = 3.0
POLL = 0.001

FLOOD = f"""
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
out = sys.stdout
pad = "x" * 80
n = 0
start = time.monotonic()
while True:
    out.write("".join(f"{{n + i:09d}} {{pad}}\\n" for i in range({BATCH})))
    out.flush()
    n += {BATCH}
    ahead = start + n / {RATE} - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
"""

#: The anchor: tail -F of the log in rows 1-23, the last key pressed on row 24.
ANCHOR = r"""
printf '\033[2J\033[1;23r\033[H'
tail -n 0 -F "$1" &
while IFS= read -rsn1 k; do printf '\0337\033[24;1H\033[2KKEY %s\0338' "$k"; done
"""


class BenchError(RuntimeError):
    pass


class TmuxControl:
    """A private tmux server (its own -L socket, no config) and one control-mode client."""

    def __init__(self, tmux: str, tmpdir: Path) -> None:
        self.argv = [tmux, "-L", f"rybench-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNYARD_", "TMUX"))}
        self.env["TMUX_TMPDIR"] = str(tmpdir)
        self.env["TERM"] = "xterm-256color"
        self.client: subprocess.Popen[bytes] | None = None

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [*self.argv, *args], env=self.env, capture_output=True, text=True, timeout=20
        )
        if done.returncode != 0:
            raise BenchError(f"tmux {args[0]}: {done.stderr.strip()}")
        return done.stdout

    def open(self, session: str, command: str, cwd: Path) -> None:
        """A detached 80x24 session running ``command``, then the control client on it."""
        self.run(
            "new-session", "-d", "-s", session, "-x", "80", "-y", "24", "-c", str(cwd), command
        )
        self.run("set-option", "-g", "window-size", "manual")
        self.close_client()
        self.client = subprocess.Popen(
            [*self.argv, "-C", "attach-session", "-f", "no-output,ignore-size", "-t", session],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
        )

    def command(self, line: str) -> list[str]:
        """Send one command line; the output lines of its reply block."""
        client = self.client
        assert client is not None and client.stdin is not None and client.stdout is not None
        client.stdin.write(line.encode() + b"\n")
        client.stdin.flush()
        return self._reply(client.stdout)

    @staticmethod
    def _reply(out: IO[bytes]) -> list[str]:
        body: list[str] | None = None
        while True:
            raw = out.readline()
            if not raw:
                raise BenchError("the tmux control client went away")
            text = raw.decode(errors="replace").rstrip("\n")
            if body is None:
                # Our commands' blocks have flags 1; others (and notifications) are skipped.
                if text.startswith("%begin ") and text.endswith(" 1"):
                    body = []
                continue
            if text.startswith(("%end ", "%error ")) and text.endswith(" 1"):
                if text.startswith("%error "):
                    raise BenchError(f"tmux: {' '.join(body)}")
                return body
            body.append(text)

    def screen(self, session: str) -> str:
        return "\n".join(self.command(f"capture-pane -p -t {session}"))

    def keys(self, session: str, key: str) -> None:
        self.command(f"send-keys -t {session} {key}")

    def pane_pid(self, session: str) -> int:
        return int(self.run("display-message", "-p", "-t", session, "#{pane_pid}").strip())

    def close_client(self) -> None:
        if self.client is not None:
            with contextlib.suppress(OSError, ValueError):
                assert self.client.stdin is not None
                self.client.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.client.wait(timeout=5)
            if self.client.poll() is None:
                self.client.kill()
                self.client.wait(timeout=5)
            self.client = None

    def kill(self) -> None:
        self.close_client()
        subprocess.run(
            [*self.argv, "kill-server"], env=self.env, capture_output=True, timeout=20, check=False
        )


def wait_screen(
    tmux: TmuxControl, session: str, cond: Callable[[str], bool], what: str, timeout: float = 30.0
) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux.screen(session)
        if cond(screen):
            return screen
        time.sleep(0.05)
    raise BenchError(f"timed out after {timeout:g}s waiting for {what}; screen:\n{screen}")


@dataclass
class Press:
    """One key and how to tell, from the screen text, that its change is shown."""

    label: str
    key: str
    shown: Callable[[str], bool]


@dataclass
class Samples:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    misses: int = 0

    def add(self, label: str, seconds: float, hit: bool) -> None:
        self.latencies.setdefault(label, []).append(seconds * 1000)
        self.misses += 0 if hit else 1

    @property
    def all(self) -> list[float]:
        return [x for xs in self.latencies.values() for x in xs]


def p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def time_press(tmux: TmuxControl, session: str, press: Press, samples: Samples) -> None:
    start = time.perf_counter()
    tmux.keys(session, press.key)
    while True:
        screen = tmux.screen(session)
        elapsed = time.perf_counter() - start
        if press.shown(screen):
            samples.add(press.label, elapsed, True)
            return
        if elapsed > PRESS_TIMEOUT:
            samples.add(press.label, elapsed, False)
            return
        time.sleep(POLL)


#: Words on the help's first screen (it scrolls at 80x24), and nowhere on the logs screen.
HELP_MARK = "reload the config"


def tui_presses() -> Iterator[Press]:
    """t, t, w, w, ?, ? for ever: each pair leaves the view as it was (following)."""

    def status(word: str, on: bool) -> Callable[[str], bool]:
        """The logs status line ("follow · 5000 lines · time wrap") names what is on."""
        return lambda screen: (f" {word}" in status_line(screen)) == on

    while True:
        yield Press("t (timestamps)", "t", status("time", True))
        yield Press("t (timestamps)", "t", status("time", False))
        yield Press("w (wrap)", "w", status("wrap", True))
        yield Press("w (wrap)", "w", status("wrap", False))
        yield Press("? (help open)", "?", lambda s: HELP_MARK in s)
        yield Press("? (help close)", "?", lambda s: HELP_MARK not in s and following(s))


def status_line(screen: str) -> str:
    """The logs screen's status line ("follow · 5000 lines · ..."), "" when not on screen."""
    for line in screen.splitlines():
        if line.startswith((" follow ·", " paused")) and " lines" in line:
            return line
    return ""


def following(screen: str) -> bool:
    return status_line(screen).startswith(" follow ·")


def anchor_presses() -> Iterator[Press]:
    while True:
        for key in "ab":
            yield Press("key echo", key, lambda s, k=key: s.rstrip("\n").endswith(f"KEY {k}"))


def rss_of(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


def log_seq(daemon: Any) -> int:
    with daemon.client() as c:
        return int(c.status(["flood"]).seqs.get("log.flood", 0))


def measure_tui(
    tmux: TmuxControl, tree: Any, daemon: Any, warmup: float, window: float
) -> dict[str, Any]:
    session = "tui"
    command = f"exec {sys.executable} -m runyard.daemon tui --root {tree.root}"
    tmux.open(session, command, tree.root.parent)
    wait_screen(
        tmux,
        session,
        lambda s: any("flood" in line and "running" in line for line in s.splitlines()),
        "the services table with flood running",
    )
    tmux.keys(session, "Enter")
    wait_screen(tmux, session, lambda s: "logs: flood" in s and following(s), "flood's log")
    pid = tmux.pane_pid(session)
    warm_end = time.monotonic() + warmup
    while time.monotonic() < warm_end:
        time.sleep(0.1)
    wait_screen(tmux, session, lambda s: "5000 lines" in s, "the 5,000-line scrollback full")

    import psutil

    proc = psutil.Process(pid)
    cpu_before = sum(proc.cpu_times()[:2])
    rss = [rss_of(pid)]
    seq_before = log_seq(daemon)
    samples = Samples()
    presses = tui_presses()
    started = time.monotonic()
    next_press = started
    next_rss = started + 0.5
    while time.monotonic() - started < window:
        now = time.monotonic()
        if now >= next_rss:
            rss.append(rss_of(pid))
            next_rss += 0.5
        if now >= next_press:
            time_press(tmux, session, next(presses), samples)
            next_press += PRESS_EVERY
        else:
            time.sleep(max(0.0, min(next_press, next_rss) - now))
    elapsed = time.monotonic() - started
    rss.append(rss_of(pid))
    seq_after = log_seq(daemon)
    cpu = (sum(proc.cpu_times()[:2]) - cpu_before) / elapsed * 100
    return {
        "samples": samples,
        "rss": rss,
        "rate": (seq_after - seq_before) / elapsed,
        "cpu": cpu,
    }


def measure_anchor(tmux: TmuxControl, tree: Any, presses_wanted: int) -> Samples:
    session = "anchor"
    script = tree.root.parent / "anchor.sh"
    script.write_text(ANCHOR)
    log = tree.logs_dir / "flood" / "flood.log"
    tmux.open(session, f"exec bash {script} {log}", tree.root.parent)
    wait_screen(tmux, session, lambda s: len(s.strip()) > 0, "tail's first lines")
    samples = Samples()
    presses = anchor_presses()
    next_press = time.monotonic()
    for _ in range(presses_wanted):
        while time.monotonic() < next_press:
            time.sleep(0.01)
        time_press(tmux, session, next(presses), samples)
        next_press += PRESS_EVERY
    return samples


def mib(n: float) -> str:
    return f"{n / 1048576:.1f}"


def run(opts: Any) -> bool:
    import platform

    repo = Path(opts.repo)
    sys.path[:0] = [str(repo / "tests")]
    from daemonkit import Daemon, build_tree, short_root  # the tests' real-tree helpers

    tmux_bin = shutil.which("tmux")
    if tmux_bin is None:
        print("  FAIL: tmux is not installed")
        return False
    warmup, window = (3.0, 10.0) if opts.quick else (5.0, 60.0)
    anchor_count = 20 if opts.quick else 40
    cores = len(os.sched_getaffinity(0))
    version = subprocess.run([tmux_bin, "-V"], capture_output=True, text=True).stdout.strip()
    print(
        f"  python {platform.python_version()}, {cores} cores, load {os.getloadavg()[0]:.2f}, "
        f"{version}; {RATE:,} lines/s, warm-up {warmup:g}s, window {window:g}s, a key every "
        f"{PRESS_EVERY:g}s",
        flush=True,
    )
    root = short_root()
    tmux = TmuxControl(tmux_bin, root.parent)
    daemon = None
    # SIGTERM unwinds like Ctrl-C, so the finally below stops tmux, the TUI and the daemon.
    old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        tree = build_tree(root, {"flood": FLOOD})
        daemon = Daemon(tree).start()
        tui = measure_tui(tmux, tree, daemon, warmup, window)
        tmux.kill()
        tmux = TmuxControl(tmux_bin, root.parent)
        anchor = measure_anchor(tmux, tree, anchor_count)
    except BenchError as exc:
        print(f"  FAIL: {exc}")
        return False
    finally:
        signal.signal(signal.SIGTERM, old_term)
        tmux.kill()
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(root.parent, ignore_errors=True)

    samples: Samples = tui["samples"]
    every = samples.all
    floor = p95(anchor.all)
    print(f"  {'keys':28} {'presses':>7} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}")
    rows = [(f"runyard tui: {k}", v) for k, v in samples.latencies.items()]
    rows += [("runyard tui: all keys", every), ("anchor: tail -F + key echo", anchor.all)]
    for label, values in rows:
        print(
            f"  {label:28} {len(values):7d} {statistics.median(values):7.1f} "
            f"{p95(values):7.1f} {max(values):7.1f}"
        )
    rss: list[int] = tui["rss"]
    base, peak, end = rss[0], max(rss), rss[-1]
    growth = (peak - base) / base
    print(
        f"  TUI RSS MiB: start {mib(base)}, max {mib(peak)}, end {mib(end)} "
        f"({len(rss)} samples; max growth {growth:+.1%}); TUI CPU {tui['cpu']:.0f}%"
    )
    print(f"  the service logged {tui['rate']:,.0f} lines/s during the window")
    latency_ok = p95(every) < TARGET_P95_MS and samples.misses == 0
    rss_ok = growth < RSS_GROWTH
    print(
        f"  {'PASS' if latency_ok else 'FAIL'}: key to screen p95 {p95(every):.1f} ms "
        f"(target < {TARGET_P95_MS:g} ms; {samples.misses} missed); "
        f"ratio to the anchor's p95 {floor:.1f} ms: {p95(every) / floor:.1f}x"
    )
    print(
        f"  {'PASS' if rss_ok else 'FAIL'}: RSS growth after warm-up {growth:+.1%} "
        f"(target < {RSS_GROWTH:.0%})"
    )
    print(f"  loadavg after: {os.getloadavg()[0]:.2f}")
    return latency_ok and rss_ok
