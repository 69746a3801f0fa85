"""Fuzz the control socket of a live daemon: whatever arrives, it answers or drops, and survives.

One daemon (one sleeper service) serves every example of the module. Frames go through a raw
zmq DEALER, so nothing in the client library smooths them. Each single frame is judged against
a local oracle, the same ``decode_request`` the daemon runs:

* over ``MAX_MESSAGE_BYTES``: a ``too_large`` error, or zmq's MAXMSGSIZE cuts the peer off;
* undecodable (not JSON, invalid UTF-8, wrong shape or types, unknown op, nested too deep):
  a ``bad_request`` error whose id is "" (the daemon echoes only a decoded request's id);
* a valid request of a harmless op (hello, status, logs.tail, du): its reply, same id, never
  ``internal``. Valid requests of ops that act (stop, signal, shutdown, ...) are never sent.

After each test the daemon still answers ``status`` through the real client, its service is
running with the pid it had at the start, and its log holds no traceback.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
import pytest
import zmq
from daemonkit import SLEEPER, Daemon, build_tree, short_root, wait_for
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from zmq.utils.monitor import recv_monitor_message

from runyard.protocol import messages as m
from runyard.protocol.endpoints import endpoints_for

SERVICE = "sleeper"
#: Requests of these ops only read; a valid one may reach the daemon.
SAFE = (m.Hello, m.Status, m.LogsTail, m.Du)
#: Every request type and its tag; the fuzzer builds objects around these.
OPS: dict[str, type[m.Request]] = {
    cls.__struct_config__.tag: cls
    for cls in (
        m.Hello,
        m.Status,
        m.Start,
        m.Stop,
        m.Restart,
        m.Signal,
        m.Reload,
        m.LogsTail,
        m.Du,
        m.Ensure,
        m.Shutdown,
    )
}
FIELDS: dict[str, tuple[str, ...]] = {
    op: tuple(f.name for f in msgspec.structs.fields(cls)) for op, cls in OPS.items()
}
REPLY_WAIT_MS = 5000


def fuzz(examples: int) -> settings:
    """Examples share the module's daemon; ``healthy`` is checked once per test, not per example."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


# --- the live daemon, shared by the module -----------------------------------------------------


@dataclass
class Live:
    daemon: Daemon
    pid: int
    sock: zmq.Socket
    zctx: zmq.Context
    #: What an earlier test found wrong: the rest of the module fails at once, not by timeouts.
    broken: str = ""

    @property
    def endpoint(self) -> str:
        return endpoints_for(self.daemon.tree.root).control


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    root = short_root()
    d = Daemon(build_tree(root, {SERVICE: SLEEPER}))
    zctx = zmq.Context()
    try:
        d.start()
        pid = wait_for(lambda: _running_pid(d), what="the sleeper running")
        sock = _dealer(zctx, endpoints_for(root).control)
        yield Live(d, int(pid), sock, zctx)
        sock.close(linger=0)
    finally:
        zctx.destroy(linger=0)
        d.stop()
        shutil.rmtree(root.parent, ignore_errors=True)


@pytest.fixture
def healthy(live: Live) -> Iterator[Live]:
    """The daemon as a test finds it, checked again once the test is done."""
    if live.broken:
        pytest.fail(f"an earlier test left the daemon broken: {live.broken}")
    try:
        assert_healthy(live)
        yield live
        assert_healthy(live)
    except BaseException as exc:
        live.broken = f"{type(exc).__name__}: {str(exc)[:300]}"
        raise


def _running_pid(d: Daemon) -> int | None:
    with d.client(timeout=5) as c:
        (s,) = c.status([SERVICE]).services
    return s.pid if s.state == "running" else None


def _dealer(zctx: zmq.Context, endpoint: str | None) -> zmq.Socket:
    sock = zctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if endpoint is not None:
        sock.connect(endpoint)
    return sock


def assert_healthy(live: Live) -> None:
    with live.daemon.client(timeout=5) as c:
        reply = c.status()
    (s,) = reply.services
    assert (s.name, s.state, s.pid, s.restarts) == (SERVICE, "running", live.pid, 0)
    assert reply.daemon_pid == live.daemon.proc.pid
    assert live.daemon.proc.poll() is None
    log = live.daemon.tree.logs_dir / "runyard" / "daemon.log"
    stderr = live.daemon.tree.root.parent / "daemon.stderr"
    for path in (log, stderr):
        text = path.read_text(errors="replace") if path.exists() else ""
        assert "Traceback" not in text and "internal error" not in text, f"{path}:\n{text[-3000:]}"
    # Nothing left over from an earlier exchange (a second reply would desync the oracle).
    assert not live.sock.poll(0)


# --- the oracle ---------------------------------------------------------------------------------


def ask(live: Live, frames: list[bytes]) -> m.Reply:
    """Send ``frames`` as one message on the shared DEALER and read the one reply it gets."""
    live.sock.send_multipart(frames)
    assert live.sock.poll(REPLY_WAIT_MS), f"no reply to {[f[:80] for f in frames]!r}"
    (data,) = live.sock.recv_multipart()
    return m.decode_reply(data)


class _IdOnly(msgspec.Struct):
    id: str = ""


def readable_id(frame: bytes) -> str:
    """The id the daemon echoes for a frame that is no valid request: a JSON object's string
    ``id`` when it can be read, so a client can match the error to its request; else ""."""
    try:
        return msgspec.json.decode(frame, type=_IdOnly).id
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return ""


def judge(frame: bytes, reply: m.Reply) -> None:
    """``reply`` is what the daemon should answer to the single frame ``frame``."""
    assert len(frame) <= m.MAX_MESSAGE_BYTES
    try:
        req = m.decode_request(frame)
    except RecursionError:
        # The depth limit depends on the caller's stack: the daemon may still decode it.
        if isinstance(reply, m.ErrorReply):
            assert reply.code == "bad_request", reply
        return
    except (msgspec.DecodeError, UnicodeDecodeError):
        assert isinstance(reply, m.ErrorReply), reply
        assert (reply.code, reply.id) == ("bad_request", readable_id(frame)), reply
        assert reply.message
        return
    assert isinstance(req, SAFE), f"the fuzzer sent a request that acts: {req!r}"
    assert reply.id == req.id
    if isinstance(reply, m.ErrorReply):
        assert reply.code in ("bad_request", "not_found", "unsupported_version"), reply
    else:
        expected = {
            m.Hello: m.HelloReply,
            m.Status: m.StatusReply,
            m.LogsTail: m.LogsReply,
            m.Du: m.DuReply,
        }
        assert isinstance(reply, expected[type(req)]), reply


def sendable(frame: bytes) -> bool:
    """False for a frame the daemon would act on (a valid stop, signal, shutdown, ...)."""
    try:
        return isinstance(m.decode_request(frame), SAFE)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return True


def exchange(live: Live, frame: bytes) -> None:
    assume(sendable(frame))
    reply = ask(live, [frame])
    event(
        f"reply: {reply.code if isinstance(reply, m.ErrorReply) else reply.__struct_config__.tag}"
    )
    judge(frame, reply)


# --- strategies ---------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
op_values = st.sampled_from(sorted(OPS)) | st.sampled_from(["", "STATUS", "status ", "log", "x.y"])
op_values = op_values | st.text(max_size=10) | json_values
ids = st.text(max_size=12) | json_values
services = st.sampled_from([SERVICE, "nope", "", "../x"])


def field_value(field: str) -> st.SearchStrategy[object]:
    """Mostly anything (wrong types), sometimes a value of the right type."""
    right = {
        "services": st.lists(services, max_size=3),
        "service": services,
        "all": st.booleans(),
        "wait": st.booleans(),
        "n": st.integers(min_value=-5, max_value=2**64),
        "after_seq": st.none() | st.integers(min_value=-5, max_value=2**64),
        "protocol": st.integers(min_value=-1, max_value=3),
        "client": st.text(max_size=8),
        "signal": st.sampled_from(["TERM", "HUP", "0", "9", "NOPE"]),
        "name": st.text(max_size=8),
        "version_spec": st.text(max_size=8),
        "catalog": st.none() | st.text(max_size=8),
        "id": st.text(max_size=12),
    }.get(field, json_values)
    return st.one_of(json_values, right)


@st.composite
def request_objects(draw: st.DrawFn) -> bytes:
    """A JSON object shaped like a request: an op (known or not), some of its fields, any types.

    Written by hand from (key, value) pairs, so keys may repeat or be left out, and whitespace
    and key order vary."""
    op = draw(op_values)
    known = FIELDS.get(op, ()) if isinstance(op, str) else ()
    pairs: list[tuple[str, object]] = []
    if draw(st.integers(0, 9)) > 0:
        pairs.append(("op", op))
    for field in draw(st.lists(st.sampled_from([*known, "id"]), max_size=4)) if known else []:
        pairs.append((field, draw(field_value(field))))
    if draw(st.booleans()):
        pairs.append(("id", draw(ids)))
    pairs.extend(draw(st.lists(st.tuples(st.text(max_size=6), json_values), max_size=2)))
    pairs = draw(st.permutations(pairs))
    sep = draw(st.sampled_from([",", ", ", " ,\n"]))
    body = sep.join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs)
    return ("{" + body + "}").encode()


@st.composite
def valid_requests(draw: st.DrawFn) -> bytes:
    """A valid, harmless request (with a readable id), as the daemon would decode it."""
    req: m.Request = draw(
        st.one_of(
            st.builds(m.Status, services=st.lists(services, max_size=2)),
            st.builds(m.Hello, protocol=st.integers(0, 2), client=st.text(max_size=5)),
            st.builds(
                m.LogsTail,
                service=services,
                n=st.integers(-2, 50),
                after_seq=st.none() | st.integers(-2, 10),
            ),
            st.just(m.Du()),
        )
    )
    return m.encode(msgspec.structs.replace(req, id=draw(st.text(max_size=12))))


INVALID_UTF8 = [
    b"\xff",
    b"\xfe",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xe2\x82",
    b"\x80",
    b"\xf8\x88\x80",
]


@st.composite
def broken_utf8(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A valid request with an invalid UTF-8 sequence spliced in, and whether it is in the id.

    Anywhere else it may land in a key the decoder skips unread (msgspec does not check the
    UTF-8 of unknown keys), and then the request is valid."""
    frame = draw(valid_requests())
    bad = draw(st.sampled_from(INVALID_UTF8))
    if draw(st.booleans()):
        at = frame.index(b'"id":"') + len(b'"id":"')
        return frame[:at] + bad + frame[at:], True
    at = draw(st.integers(0, len(frame)))
    return frame[:at] + bad + frame[at:], False


# --- single frames ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@fuzz(400)
@given(frame=st.binary(max_size=300))
def test_random_bytes(healthy: Live, frame: bytes) -> None:
    exchange(healthy, frame)


@pytest.mark.timeout(60)
@fuzz(300)
@given(value=json_values)
def test_json_of_any_shape(healthy: Live, value: object) -> None:
    exchange(healthy, json.dumps(value).encode())


@pytest.mark.timeout(60)
@fuzz(600)
@given(frame=request_objects())
def test_request_objects_with_wrong_fields_and_unknown_ops(healthy: Live, frame: bytes) -> None:
    exchange(healthy, frame)


@pytest.mark.timeout(60)
@fuzz(150)
@given(frame=valid_requests())
def test_valid_harmless_requests_echo_their_id(healthy: Live, frame: bytes) -> None:
    exchange(healthy, frame)


@pytest.mark.timeout(60)
@fuzz(200)
@given(case=broken_utf8())
def test_invalid_utf8(healthy: Live, case: tuple[bytes, bool]) -> None:
    frame, in_id = case
    reply = ask(healthy, [frame])
    if in_id:
        assert isinstance(reply, m.ErrorReply) and (reply.code, reply.id) == ("bad_request", "")
    judge(frame, reply)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("depth", [64, 1000, 10_000, 150_000])
@pytest.mark.parametrize(
    "where",
    ["top array", "top object", "unknown field", "services", "id", "op"],
)
def test_deeply_nested_json(healthy: Live, depth: int, where: str) -> None:
    arrays = b"[" * depth + b"]" * depth
    objects = b'{"a":' * depth + b"1" + b"}" * depth
    frame = {
        "top array": arrays,
        "top object": objects,
        "unknown field": b'{"op":"status","id":"deep","x":' + arrays + b"}",
        "services": b'{"op":"status","id":"deep","services":' + arrays + b"}",
        "id": b'{"op":"status","id":' + objects + b"}",
        "op": b'{"id":"deep","op":' + arrays + b"}",
    }[where]
    reply = ask(healthy, [frame])
    if depth >= 1000:
        assert isinstance(reply, m.ErrorReply) and reply.code == "bad_request", reply
    judge(frame, reply)


@pytest.mark.timeout(60)
def test_empty_frame(healthy: Live) -> None:
    judge(b"", ask(healthy, [b""]))


# --- several frames -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
@fuzz(200)
@given(
    frames=st.lists(
        st.one_of(st.binary(max_size=40), valid_requests(), st.just(b"")), min_size=2, max_size=6
    )
)
def test_multi_frame_messages(healthy: Live, frames: list[bytes]) -> None:
    # Even when every frame is a valid request, a request is one frame: nothing is run.
    reply = ask(healthy, frames)
    assert isinstance(reply, m.ErrorReply), reply
    assert (reply.code, reply.id) == ("bad_request", "")


# --- huge frames --------------------------------------------------------------------------------


def _padded_status(size: int) -> bytes:
    """A valid status request of exactly ``size`` bytes (its id is the padding)."""
    head, tail = b'{"op":"status","id":"', b'"}'
    return head + b"p" * (size - len(head) - len(tail)) + tail


def _answer_or_cutoff(live: Live, frames: list[bytes]) -> m.Reply | None:
    """The reply to ``frames`` sent on a fresh DEALER, or None when the daemon cut it off."""
    sock = _dealer(live.zctx, None)
    monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    try:
        sock.connect(live.endpoint)  # after the monitor, so it sees the connection
        assert monitor.poll(REPLY_WAIT_MS) and recv_monitor_message(monitor)["event"] == (
            zmq.EVENT_CONNECTED
        )
        sock.send_multipart(frames)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready = dict(poller.poll(200))
            if sock in ready:
                return m.decode_reply(sock.recv())
            if monitor in ready and (
                recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
            ):
                return None
        raise AssertionError(f"neither a reply nor a cut-off for {len(frames[0])} bytes")
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [m.MAX_MESSAGE_BYTES + 1, 2 * m.MAX_MESSAGE_BYTES, 8 << 20])
@pytest.mark.parametrize("kind", ["valid request", "garbage"])
def test_frames_over_the_limit_are_refused_unread(healthy: Live, size: int, kind: str) -> None:
    frame = _padded_status(size) if kind == "valid request" else b"\x00" * size
    reply = _answer_or_cutoff(healthy, [frame])
    if reply is not None:
        assert isinstance(reply, m.ErrorReply) and (reply.code, reply.id) == ("too_large", "")


@pytest.mark.timeout(60)
def test_frames_at_the_limit_are_read(healthy: Live) -> None:
    frame = _padded_status(m.MAX_MESSAGE_BYTES)
    reply = ask(healthy, [frame])
    assert isinstance(reply, m.StatusReply) and reply.id == m.decode_request(frame).id
    junk = b"\xff" * m.MAX_MESSAGE_BYTES
    judge(junk, ask(healthy, [junk]))


@pytest.mark.timeout(60)
def test_several_big_frames_under_the_limit_each(healthy: Live) -> None:
    big = _padded_status(m.MAX_MESSAGE_BYTES - 10)
    reply = _answer_or_cutoff(healthy, [big, big, big])
    assert isinstance(reply, m.ErrorReply) and reply.code in ("bad_request", "too_large"), reply


# --- clients that leave -------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_clients_that_leave_before_the_reply(healthy: Live) -> None:
    """Replies to peers that are gone (or never read) are dropped; nobody else waits for them."""
    live = healthy
    requests = [
        m.encode(m.Du(id="du")),  # answered from a task, after the peer is gone
        m.encode(m.Status(id="st")),  # answered inline
        m.encode(m.LogsTail(id="lt", service=SERVICE, n=1000)),
        b"not json",
        b'{"op":"warp"}',
        _padded_status(m.MAX_MESSAGE_BYTES),
    ]
    for round_ in range(60):
        sock = live.zctx.socket(zmq.DEALER)
        sock.connect(live.endpoint)
        sock.send(requests[round_ % len(requests)])
        # Closing with a linger delivers the request, then the connection goes away.
        sock.close(linger=2000)
    # A client that sends a flood and never reads a reply, then leaves.
    flood = live.zctx.socket(zmq.DEALER)
    flood.connect(live.endpoint)
    for i in range(5000):
        with contextlib.suppress(zmq.Again):  # at the high-water mark: this client is stuck
            flood.send(m.encode(m.Status(id=f"f{i}")) if i % 2 else b"junk", zmq.NOBLOCK)
    # Meanwhile another client is answered.
    with live.daemon.client(timeout=5) as c:
        started = time.monotonic()
        for _ in range(20):
            c.status()
        assert time.monotonic() - started < 5
    flood.close(linger=0)
    # The shared DEALER still gets exactly its own replies.
    judge(b'{"op":"hello","id":"after"}', ask(live, [b'{"op":"hello","id":"after"}']))
    wait_for(lambda: _running_pid(live.daemon) == live.pid, what="the sleeper unchanged")
