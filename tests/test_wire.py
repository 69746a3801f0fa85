"""The wire: typed replies and events a newer daemon cannot break, one set of operations for both
clients, a daemon bounded under abuse, and request fields that name things checked as names."""

from __future__ import annotations

import ast
import contextlib
import inspect
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import psutil
import pytest
import zmq
from daemonkit import SLEEPER, Daemon, build_tree, wait_for

from runyard import protocol
from runyard.protocol import messages, payloads
from runyard.protocol.client import AsyncClient, BadRequest, Client, RemoteError, parse_event
from runyard.protocol.endpoints import endpoints_for
from runyard.protocol.messages import (
    EventUnion,
    LogLine,
    ReplyUnion,
    RequestUnion,
    ServiceStatus,
    Status,
    StatusReply,
    decode_event,
    decode_reply,
    encode,
)
from runyard.protocol.payloads import Check, Port, ReplayReport, RunStep
from runyard.protocol.transport import interpret
from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def empty_daemon(root: Path, daemons) -> Daemon:
    tree = RuntimeTree(root)
    init_tree(tree)
    (root.parent / "runyard.toml").write_text(f'root = "{root.name}"\n')
    return daemons(tree).start()


# --- a wire older clients can read ---------------------------------------------------------------

#: A field no struct of today has, as a newer daemon would add it.
FUTURE = "field_from_a_newer_daemon"
#: Names no daemon of today sends, in every str field (states, codes, kinds, statuses).
UNKNOWN = "hibernating"


def _future(t: mi.Type, seen: set[type]) -> Any:
    """Plain data of type ``t`` as a newer daemon would send it: every field filled, one more
    field in every struct (a trailing element for an array-like one), unknown names for strs."""
    match t:
        case mi.StructType():
            seen.add(t.cls)
            values = {f.encode_name: _future(f.type, seen) for f in t.fields}
            if t.array_like:
                return [*values.values(), {"more": 1}]
            if t.tag_field is not None:
                values[t.tag_field] = t.tag
            return {**values, FUTURE: {"nested": [1, "x"]}}
        case mi.ListType() | mi.VarTupleType():
            return [_future(t.item_type, seen), _future(t.item_type, seen)]
        case mi.DictType():
            return {"k": _future(t.value_type, seen)}
        case mi.UnionType():
            # The struct (or other non-None) member: what a daemon fills in.
            return _future(next(x for x in t.types if not isinstance(x, mi.NoneType)), seen)
        case mi.Metadata():
            return _future(t.type, seen)
        case mi.StrType():
            return UNKNOWN
        case mi.IntType():
            return 7
        case mi.FloatType():
            return 7.5
        case mi.BoolType():
            return True
        case mi.AnyType():
            return {"any": [1, None]}
        case mi.LiteralType():
            return t.values[0]
    raise AssertionError(f"no sample for wire type {t!r}: teach _future about it")


def _wire_types(union: Any) -> list[type]:
    return [x.cls for x in mi.type_info(union).types]  # type: ignore[attr-defined]


def test_newer_daemon_messages_decode_with_todays_client() -> None:
    """Every reply and event a newer daemon could send (one more field in every struct it
    holds, unknown state, code and kind names) decodes with today's decoders."""
    seen: set[type] = set()
    for decode, union in ((decode_reply, ReplyUnion), (decode_event, EventUnion)):
        for cls in _wire_types(union):
            data = _future(mi.type_info(cls), seen)
            decoded = decode(json.dumps(data).encode())
            assert type(decoded) is cls
    # Every struct that travels was reached (a new one is covered by the walk, not by hand).
    assert {ServiceStatus, Port, LogLine, RunStep, ReplayReport, Check} <= seen
    assert all(not c.__struct_config__.forbid_unknown_fields for c in seen)
    # An unknown state name is read as it is.
    (service,) = decode_reply(
        json.dumps(
            _future(mi.type_info(StatusReply), set())
            | {"services": [{"name": "web", "state": UNKNOWN, "wanted": "sideways", FUTURE: 1}]}
        ).encode()
    ).services  # type: ignore[attr-defined]
    assert (service.state, service.wanted) == (UNKNOWN, "sideways")
    # A reply with a code this client does not know is a plain RemoteError, one line.
    with pytest.raises(RemoteError, match="slow down"):
        interpret(
            b'{"reply":"error","id":"1","code":"rate_limited","message":"slow down"}', "1", "e"
        )
    # An event kind this client does not know is skipped, not an error.
    assert (
        parse_event([b"future.x", b'{"event":"future","topic":"future.x","seq":1,"ts":1}']) is None
    )


def test_a_sealed_runs_directory_keeps_its_wire_key_bundle() -> None:
    """A sealed run's directory is ``run_dir`` in Python; on the wire it keeps the key it had when
    a sealed run was called a bundle, so clients and daemons of either age read each other."""
    for op in ("verify", "replay"):
        sent = json.dumps({"op": op, "id": "1", "bundle": "/runs/r1"}).encode()
        request = msgspec.json.decode(sent, type=RequestUnion)
        assert request.run_dir == "/runs/r1"  # type: ignore[union-attr]
        assert json.loads(encode(request))["bundle"] == "/runs/r1"
    # Every struct that carries one sends it under the old key (found by a walk, not by hand).
    carriers = [
        cls
        for module in (messages, payloads)
        for cls in vars(module).values()
        if isinstance(cls, type) and issubclass(cls, msgspec.Struct)
        and any(f.name == "run_dir" for f in msgspec.structs.fields(cls))
    ]  # fmt: skip
    assert {messages.VerifyRun, messages.ReplayRun, payloads.RunOutcome, RunStep} <= set(carriers)
    for cls in carriers:
        names = {f.name: f.encode_name for f in msgspec.structs.fields(cls)}
        assert names["run_dir"] == payloads.RUN_DIR_WIRE_KEY == "bundle", cls
    # The daemon's conversion from the runtime's structs finds it by its Python name, nested too.
    report = {"run_dir": "/runs/r1", "checks": [], "ok": True}
    replay = payloads.from_runtime({"run_dir": "/runs/r1", "verify": report}, ReplayReport)
    assert replay.run_dir == replay.verify.run_dir == "/runs/r1"
    assert json.loads(msgspec.json.encode(replay))["verify"]["bundle"] == "/runs/r1"


def test_status_port_with_a_newer_field_decodes() -> None:
    """ServiceStatus.ports was the on-disk PortDef (forbid_unknown_fields, a closed Literal of
    protocols): one more field on a port made every status reply and state event undecodable."""
    assert mi.type_info(ServiceStatus).fields  # a Struct; its ports are the wire's Port
    ports = next(f for f in mi.type_info(ServiceStatus).fields if f.name == "ports")
    assert ports.type.item_type.cls is Port  # type: ignore[attr-defined]
    port = {"name": "http", "port": 8080, "protocol": "quic", "ipv6_only": True}
    web = {"name": "web", "state": "running", "ports": [port]}
    reply = {"reply": "status", "id": "1", "services": [web], "seqs": {}}
    reply |= {"daemon_pid": 1, "daemon_started_at": 1.0}
    (service,) = decode_reply(json.dumps(reply).encode()).services  # type: ignore[attr-defined]
    assert service.ports == [Port(name="http", port=8080, protocol="quic")]
    event = {"event": "state", "topic": "state.web", "seq": 1, "ts": 1.0, "service": web}
    assert decode_event(json.dumps(event).encode()).service.ports[0].port == 8080  # type: ignore[attr-defined]


def test_protocol_imports_nothing_from_runtime() -> None:
    """The wire contract (messages, payloads) imports nothing from runtime: no struct of a file we
    own can leak onto the wire. The client helpers may use four runtime modules, none of which
    defines a wire shape: the error base, root resolution, Curve key files, and sha256 (the
    socket dir's name: runtime.core.digest, without OpenSSL)."""
    allowed = {
        "runtime.core.errors",
        "runtime.core.tree",
        "runtime.signing.keys",
        "runtime.core.digest",
    }
    wire_contract = {"messages.py", "payloads.py"}
    package = Path(protocol.__file__).parent
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                name = name.removeprefix("runyard.")
                if name == "runtime" or name.startswith("runtime."):
                    where = f"{path.name}:{node.lineno} imports {name}"
                    assert path.name not in wire_contract, where
                    assert name in allowed, where


# --- runs.list takes an engine name, not a path ----------------------------------------------


def test_runs_list_engine_is_a_name_not_a_path(empty_daemon: Daemon) -> None:
    # A run bundle outside the tree's data/ that a path-like engine would reach.
    outside = empty_daemon.tree.root.parent / "elsewhere" / "runs" / "20260101T000000.000000Z-aaaa"
    outside.mkdir(parents=True)
    with empty_daemon.client() as c:
        for bad in ("../elsewhere", "../../tmp", "/etc", "a\x00b", "", "A/B"):
            with pytest.raises(BadRequest) as err:
                c.runs_list(bad)
            line = str(err.value)
            assert "\n" not in line and "invalid engine name" in line, line
        assert c.runs_list("heat1d").runs == []  # a good name of an engine with no runs
        assert c.status().daemon_pid == empty_daemon.proc.pid  # still serving


# --- both clients expose the same operations ---------------------------------------------------


def _operations(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in {"close", "request", "events"}
    }


def test_client_and_async_client_have_the_same_operations() -> None:
    sync_ops, async_ops = _operations(Client), _operations(AsyncClient)
    assert sorted(sync_ops) == sorted(async_ops)
    # One method per request type of the wire (``logs.tail`` is ``logs_tail``), no more, no less:
    # a request added to RequestUnion without its method on both clients fails here.
    tags = {t.tag for t in mi.type_info(RequestUnion).types}  # type: ignore[attr-defined]
    assert sorted(sync_ops) == sorted(str(t).replace(".", "_") for t in tags)
    for name, sig in sync_ops.items():
        assert str(sig) == str(async_ops[name]), f"{name}: {sig} != {async_ops[name]}"
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
    # request / events / close exist on both, with the same parameters.
    for name in ("close", "request", "events"):
        s, a = (
            inspect.signature(getattr(Client, name)),
            inspect.signature(getattr(AsyncClient, name)),
        )
        assert list(s.parameters.values()) == list(a.parameters.values()), name


# --- bounded under abuse -----------------------------------------------------------------------

MiB = 1024 * 1024
#: The daemon's RSS must stay under this through the whole abuse test.
RSS_LIMIT = 64 * MiB


def _random_frames(rng: random.Random) -> list[bytes]:
    """One multipart message of the kinds a broken or hostile peer sends."""
    kind = rng.randrange(6)
    if kind == 0:
        return [rng.randbytes(rng.randrange(0, 4096))]
    if kind == 1:
        return [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(2, 5))]
    if kind == 2:  # JSON that is not a request
        return [b"[" * rng.randrange(1, 5000) + b"]" * rng.randrange(0, 5000)]
    if kind == 3:  # an op nobody knows, with an id
        return [json.dumps({"op": f"x{rng.random()}", "id": "r"}).encode()]
    if kind == 4:  # a known op with wrong types
        return [json.dumps({"op": "logs.tail", "service": [1, 2], "n": "many"}).encode()]
    return [b""]


class RssPeak(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self.start_rss = self.peak
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.proc.memory_info().rss)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_daemon_bounded_under_abuse(root: Path, daemons) -> None:
    """10,000 random frames, 50 frames of 10-100 MiB and 20 clients bursting status (most of them
    never reading a reply) for 30 s: the daemon keeps its pid, answers status, stays < 64 MiB."""
    tree = build_tree(root, {f"s{i}": SLEEPER for i in range(5)})
    d = daemons(tree).start()
    pid = d.proc.pid
    with d.client() as c:
        wait_for(lambda: all(s.state == "running" for s in c.status().services), what="running")
    endpoint = endpoints_for(tree.root).control
    rng = random.Random(10)
    zctx = zmq.Context()
    big = memoryview(bytearray(100 * MiB))
    sampler = RssPeak(pid)
    sampler.start()
    status = encode(Status(id="burst"))
    try:
        bursters = []
        for i in range(20):
            s = zctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 0)  # queue as much as the daemon will take
            s.connect(endpoint)
            bursters.append((s, i % 4 == 0))  # one in four reads its replies, the rest never do
        noisy = []
        for _ in range(8):
            s = zctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            noisy.append(s)
        random_left, big_left = 10_000, 50
        started = time.monotonic()
        next_check = started + 2
        checks = 0
        while (elapsed := time.monotonic() - started) < 30 or random_left or big_left:
            for s, reads in bursters:
                for _ in range(50):
                    with contextlib.suppress(zmq.Again):
                        s.send(status, zmq.NOBLOCK)
                while reads and s.poll(0, zmq.POLLIN):
                    s.recv()
            # Spread the random and the huge frames over the 30 s.
            due = min(10_000, int(10_000 * elapsed / 28) + 1)
            while random_left and 10_000 - random_left < due:
                with contextlib.suppress(zmq.Again):
                    rng.choice(noisy).send_multipart(_random_frames(rng), zmq.NOBLOCK)
                random_left -= 1
            if big_left and 50 - big_left < int(50 * elapsed / 28) + 1:
                s = zctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.connect(endpoint)
                s.send(big[: rng.randrange(10 * MiB, 100 * MiB + 1)], copy=False)
                s.close()
                big_left -= 1
            if time.monotonic() >= next_check:
                with Client(tree.root, timeout=10) as good:
                    assert good.status().daemon_pid == pid
                checks += 1
                next_check = time.monotonic() + 2
        assert checks >= 10
        with Client(tree.root, timeout=10) as good:
            reply = good.status()
            assert reply.daemon_pid == pid and len(reply.services) == 5
        assert d.proc.poll() is None
    finally:
        sampler.done.set()
        sampler.join()
        zctx.destroy(linger=0)
    print(
        f"daemon RSS {sampler.start_rss / MiB:.1f} MiB at start, peak {sampler.peak / MiB:.1f} MiB"
    )
    assert sampler.peak < RSS_LIMIT, f"peak RSS {sampler.peak / MiB:.1f} MiB"
