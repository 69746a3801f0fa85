"""runtime.canonical: canonical_bytes is byte for byte rfc8785.dumps, the RFC 8785 reference.

The proof is here: the six official RFC 8785 vectors (tests/data/rfc8785/, with their README),
a few thousand ES6 number cases, each claim the fast path rests on (module docstring) checked
on its own, every layout the walk treats differently (long lists, pooled short lists, records,
mixed lists), and 20,000 random JSON values from hypothesis.
"""

from __future__ import annotations

import collections
import copy
import decimal
import enum
import gc
import hashlib
import json
import math
import random
import struct
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runyard.runtime.core import canonical
from runyard.runtime.core.canonical import canonical_bytes, canonical_sha256, loads_canonical_check

DATA = Path(__file__).parent / "data" / "rfc8785"
VECTORS = sorted(p.stem for p in (DATA / "input").glob("*.json"))
MAX_SAFE = 2**53 - 1


def same_as_reference(value: Any) -> None:
    assert canonical_bytes(value) == rfc8785.dumps(value)


# -- the official vectors ---------------------------------------------------------------------


def test_all_six_vectors_are_here() -> None:
    assert VECTORS == ["arrays", "french", "structures", "unicode", "values", "weird"]
    assert (DATA / "README.md").is_file()


@pytest.mark.parametrize("name", VECTORS)
def test_rfc8785_vector(name: str) -> None:
    source = (DATA / "input" / f"{name}.json").read_bytes()
    expected = (DATA / "output" / f"{name}.json").read_bytes()
    for value in (json.loads(source), msgspec.json.decode(source)):
        assert rfc8785.dumps(value) == expected  # the reference agrees with the vector
        assert canonical_bytes(value) == expected
        assert canonical_sha256(value) == hashlib.sha256(expected).hexdigest()
    assert loads_canonical_check(expected)
    assert not loads_canonical_check(source)


# -- ES6 numbers ----------------------------------------------------------------------------


def double(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def es6_sample() -> list[float]:
    """~6,000 doubles: random bit patterns, decade edges, subnormals, extremes, whole numbers."""
    rnd = random.Random(8785)
    out: list[float] = []
    while len(out) < 2000:  # every exponent, uniformly
        f = double(rnd.getrandbits(64))
        if math.isfinite(f):
            out.append(f)
    for e in range(-323, 309):  # 10**e and its neighbours: where the layout switches
        p = float(f"1e{e}")
        out += [p, math.nextafter(p, 0.0), math.nextafter(p, math.inf), 3.5 * p]
    edges = [1e21, 1e20, 1e16, 1e-5, 1e-6, 1e-7, 2.0**52, 2.0**53, 2.0**63, 2.0**-20]
    for p in edges:
        down, up = p, p
        for _ in range(5):
            down, up = math.nextafter(down, 0.0), math.nextafter(up, math.inf)
            out += [down, up]
    out += [double(rnd.getrandbits(52)) for _ in range(300)]  # subnormals
    out += [
        5e-324,
        double(2**52 - 1),
        sys.float_info.min,
        sys.float_info.max,
        sys.float_info.epsilon,
    ]
    out += [float(rnd.randint(-(2**62), 2**62)) for _ in range(300)]  # whole, some beyond 2**53
    out += [float(i) for i in range(-20, 21)] + [-0.0, float(MAX_SAFE), 2.0**53 + 2, 1e22]
    out += [rnd.uniform(1e-6, 1e-5) for _ in range(300)]  # ES6 plain, msgspec exponent
    out += [round(rnd.uniform(-1e6, 1e6), rnd.randint(0, 6)) for _ in range(600)]  # measurements
    out += [rnd.random() * 10.0 ** rnd.randint(-12, 25) for _ in range(600)]
    return [f for f in out + [-f for f in out[::7]] if math.isfinite(f)]


ES6 = es6_sample()


def test_es6_numbers_one_by_one() -> None:
    for f in ES6:
        same_as_reference(f)


@pytest.mark.parametrize(
    "layout",
    [
        lambda fs: fs,  # one long list: checked and fixed in msgspec's bytes
        lambda fs: [x for f in fs for x in (f, "s", 7)],  # mixed list: floats checked as a group
        lambda fs: [[f] for f in fs],  # short lists, pooled
        lambda fs: [[f, -f, 0.5] for f in fs],
        lambda fs: [{"v": f, "w": "x"} for f in fs],  # records: by column
        lambda fs: [{"v": f} if i % 2 else {"w": f, "v": 1} for i, f in enumerate(fs)],
        lambda fs: {f"k{i}": f for i, f in enumerate(fs)},  # one big object
        lambda fs: [fs[i : i + 100] for i in range(0, len(fs), 100)],  # long lists, pooled ones
        lambda fs: [[*fs[i : i + 100], "s"] for i in range(0, len(fs), 100)],  # long, mixed
        lambda fs: tuple(fs),
    ],
    ids=[
        "list",
        "mixed",
        "pool1",
        "pool3",
        "records",
        "dicts",
        "object",
        "chunks",
        "mixed-chunks",
        "tuple",
    ],
)
def test_es6_numbers_in_every_layout(layout: Any) -> None:
    same_as_reference(layout(ES6))


def test_long_float_lists() -> None:
    """A long list of floats is fixed in msgspec's bytes: whole numbers, -0.0, exponents."""
    epoch = [float(i // 3) for i in range(15_000)]  # mostly whole numbers: cut with replace
    odd = [1e22, 5e-6, -5e-6, 1e-9, -0.0, 0.0, 2.0**60, 1e16, 3.0]
    for value in (
        epoch,
        [epoch, epoch[:100]],
        [[*epoch, -0.0]],
        [[-0.0, *epoch]],
        [[-0.0] * 100, [-0.0, 1.0] * 50, [0.5] * 70 + [-0.0], [-0.0] + [0.5] * 70],
        [[0.5] * 70 + odd, odd * 10, [1e-9] * 70, [1e-300, -2.5e-7] * 40, [2.5] * 64],
        {"a": [0.25] * 63 + [1.0], "b": [1.0] * 64, "c": [0.1 * i for i in range(1000)]},
    ):
        same_as_reference(value)


def test_es6_sample_covers_the_cases() -> None:
    layouts = {rfc8785.dumps(f)[:1] + (b"e" if b"e" in rfc8785.dumps(f) else b"") for f in ES6}
    assert {b"-", b"0", b"1", b"1e", b"-e"} <= layouts
    assert any(f.is_integer() and abs(f) >= 2**53 for f in ES6)
    assert any(0 < abs(f) < 2.2250738585072014e-308 for f in ES6)  # subnormal
    assert sum(1e-6 <= abs(f) < 1e-5 for f in ES6) > 300


def test_msgspec_float_claim() -> None:
    """Finite, not whole, |f| >= 1e-5 or < 1e-6: msgspec's bytes are rfc8785's, unpatched."""
    rnd = random.Random(53)
    floats: list[float] = []
    while len(floats) < 60_000:
        f = double(rnd.getrandbits(64)) if len(floats) % 2 else rnd.uniform(-1e4, 1e4)
        if math.isfinite(f) and not f.is_integer() and not 1e-6 <= abs(f) < 1e-5:
            floats.append(f)
    expected = b"[" + b",".join(map(rfc8785.dumps, floats)) + b"]"
    assert msgspec.json.encode(floats) == expected
    # ... and the rewritten ones really need it: whole numbers and the e-6 band differ.
    for f in (3.0, -0.0, 1e16, 1e21, 1.5e-6):
        assert msgspec.json.encode(f) != rfc8785.dumps(f)
        same_as_reference(f)


def test_whole_floats_below_2_53_are_their_int() -> None:
    rnd = random.Random(7)
    for f in [float(rnd.randint(-MAX_SAFE, MAX_SAFE)) for _ in range(5000)] + [-0.0, 0.0]:
        assert rfc8785.dumps(f) == str(int(f)).encode()


# -- strings and keys -----------------------------------------------------------------------


def test_msgspec_escapes_every_code_point_like_jcs() -> None:
    everything = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    assert msgspec.json.encode(everything) == rfc8785.dumps(everything)
    assert canonical_bytes([everything, {everything: everything}]) == rfc8785.dumps(
        [everything, {everything: everything}]
    )
    # Escaping is per character; check the interesting ones alone as well.
    for c in [*range(0x00, 0x100), 0x2028, 0x2029, 0xFEFF, 0xFFFF, 0x1F602, 0x10FFFF]:
        assert msgspec.json.encode(chr(c)) == rfc8785.dumps(chr(c)), hex(c)


TRICKY_CHARS = ["\x00", "\x1f", "\x7f", "\x80", "é", "€", "\ud7ff", "\ue000", "\ufb33", "\uffff"]
ABOVE_BMP = ["\U00010000", "\U0001f602", "\U0010ffff"]


def test_msgspec_key_order_is_utf16_order_for_bmp_keys() -> None:
    rnd = random.Random(16)
    pool = [*TRICKY_CHARS, "a", "B", "1", " "] + [chr(rnd.randint(0x20, 0xD7FF)) for _ in range(40)]
    pool += [chr(rnd.randint(0xE000, 0xFFFF)) for _ in range(40)]
    for _ in range(300):
        keys = {"".join(rnd.choices(pool, k=rnd.randint(0, 4))) for _ in range(rnd.randint(1, 30))}
        value = {k: len(k) for k in keys}
        assert msgspec.json.encode(value, order="sorted") == rfc8785.dumps(value)
        same_as_reference(value)


def test_keys_above_bmp_sort_by_utf16() -> None:
    value = {"\U0001f602": 1, "\ufb33": 2.0, "a": [1.0]}
    assert msgspec.json.encode(value, order="sorted") != rfc8785.dumps(value)  # the case matters
    for layout in (value, [value, value], [value, {"b": 1}], {"x": [value] * 70}):
        same_as_reference(layout)


# -- integers ----------------------------------------------------------------------------------


def test_integer_edges() -> None:
    ints = [0, 1, -1, 10**15, 9 * 10**15, MAX_SAFE, -MAX_SAFE, 2**31, -(2**63) // 2**11]
    for layout in (ints, ints * 10, [[i] for i in ints], [{"i": i} for i in ints], [*ints, "x"]):
        same_as_reference(layout)
    for bad in (2**53, -(2**53), 10**16, 2**64, -(10**30), 10**400):
        for layout in ([bad], [1] * 100 + [bad], [[1], [bad]], [{"i": 1}, {"i": bad}], [bad, "x"]):
            with pytest.raises(ValueError, match="outside"):
                canonical_bytes(layout)
            with pytest.raises(ValueError):
                rfc8785.dumps(layout)


# -- 20,000 random values -------------------------------------------------------------------

SPECIAL_FLOATS = [0.0, -0.0, 1.0, -3.0, 1e16, 1e21, 1e22, 2.0**53, 1e-6, 5e-6, -9.5e-6, 1e-5]
SPECIAL_FLOATS += [1e-7, 5e-324, 1.7976931348623157e308, 0.1, 123.456, 1e15 + 0.5]

# Any code point but surrogates (controls and above U+FFFF included), and the tricky ones often.
texts = st.text(
    st.characters(codec="utf-8") | st.sampled_from(TRICKY_CHARS + ABOVE_BMP), max_size=8
)
floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(SPECIAL_FLOATS)
scalars = st.none() | st.booleans() | st.integers(-MAX_SAFE, MAX_SAFE) | floats | texts


@st.composite
def records(draw: st.DrawFn, children: st.SearchStrategy[Any]) -> list[dict[str, Any]]:
    """Dicts with the same keys in the same order, which the walk checks column by column."""
    keys = draw(st.lists(texts, min_size=1, max_size=4, unique=True))
    return [{k: draw(children) for k in keys} for _ in range(draw(st.integers(2, 5)))]


def containers(children: st.SearchStrategy[Any], size: int) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=size)
        | st.dictionaries(texts, children, max_size=size)
        | records(children)
        | st.tuples(children, children)
    )


# Two levels deep (three in a batch), written out: much faster to draw than st.recursive.
level1 = scalars | containers(scalars, 5)
json_values = level1 | containers(level1, 4)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values, min_size=20, max_size=20))
def test_20000_random_values_match_rfc8785(batch: list[Any]) -> None:
    for value in batch:
        same_as_reference(value)
    same_as_reference(batch)


# Lists of 64 items and more are checked on their own (ints and floats in msgspec's bytes).
long_lists = st.lists(floats, min_size=64, max_size=100) | st.lists(
    st.integers(-MAX_SAFE, MAX_SAFE) | st.integers(-1000, 1000), min_size=64, max_size=100
)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(long_lists | level1, min_size=1, max_size=3), st.sampled_from([0, 1, 2]))
def test_random_long_lists_match_rfc8785(lists: list[Any], shape: int) -> None:
    value = [lists, {"k": lists}, [{"k": x} for x in lists]][shape]
    same_as_reference(value)


# -- what else is accepted, and what is refused -----------------------------------------------


class Color(enum.IntEnum):
    RED = 1


class Mode(enum.StrEnum):
    FAST = "fast"


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyFloat(float):
    pass


class MyList(list):  # type: ignore[type-arg]
    pass


class MyDict(dict):  # type: ignore[type-arg]
    pass


@pytest.mark.parametrize(
    "value",
    [
        (1, 2.0, "x", (3.0,)),
        collections.OrderedDict(b=1.0, a=[2, 3.5]),
        collections.defaultdict(list, z=[1.0]),
        [Color.RED, Mode.FAST, {Mode.FAST: Color.RED}],
        [MyStr("é\n"), MyInt(7), MyFloat(2.0), MyFloat(0.25)],
        MyList([MyFloat(1e-6), MyDict(z=1, a=[1.0])]),
        {"nested": [MyDict(b=MyList([1.0]))] * 70},
    ],
    ids=["tuples", "ordereddict", "defaultdict", "enums", "subclasses", "sublists", "many"],
)
def test_accepted_like_rfc8785(value: Any) -> None:
    same_as_reference(value)


class Point(msgspec.Struct, rename="camel", omit_defaults=True):
    x_pos: float
    label: str = ""
    tags: set[str] = set()


class Run(msgspec.Struct):
    points: list[Point]
    blob: bytes


def test_structs_are_their_to_builtins() -> None:
    value = {"run": Run([Point(1.0, tags={"b", "a"}), Point(0.5, "p")], b"\x00\x01")}
    expected = (
        b'{"run":{"blob":"AAE=","points":[{"tags":["a","b"],"xPos":1},{"label":"p","xPos":0.5}]}}'
    )
    assert canonical_bytes(value) == expected
    assert rfc8785.dumps(msgspec.to_builtins(value, order="deterministic")) == expected
    with pytest.raises(ValueError, match=r"^\$\.run\.points\[1\]\.xPos: NaN is not allowed"):
        canonical_bytes({"run": Run([Point(1.0), Point(math.nan)], b"")})


class Thing:
    pass


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        ({"outputs": {"x": math.nan}}, ValueError, "$.outputs.x: NaN is not allowed in canonical JSON"),
        ([1.0, math.inf], ValueError, "$[1]: Infinity is not allowed in canonical JSON"),
        ({"a": [0.5] * 99 + [-math.inf]}, ValueError, "$.a[99]: -Infinity is not allowed in canonical JSON"),
        ([{"v": 1.0}, {"v": math.nan}], ValueError, "$[1].v: NaN is not allowed in canonical JSON"),
        ({"n": 2**53}, ValueError, "$.n: integer 9007199254740992 is outside ±(2**53-1), the range canonical JSON allows"),
        ({"big": [10**400]}, ValueError, "$.big[0]: integer of 1329 bits is outside ±(2**53-1), the range canonical JSON allows"),
        ({1: "a"}, TypeError, "$: object key 1 (int) is not a string"),
        ({"m": {None: 1}}, TypeError, "$.m: object key None (NoneType) is not a string"),
        ({"m": {(1, 2): 1}}, TypeError, "$.m: object key (1, 2) (tuple) is not a string"),
        ({"blob": b"x"}, TypeError, "$.blob: bytes is not a JSON type"),
        ({"tags": {"a"}}, TypeError, "$.tags: set is not a JSON type"),
        ([Thing()], TypeError, "$[0]: Thing is not a JSON type"),
        ([decimal.Decimal("1.5")], TypeError, "$[0]: Decimal is not a JSON type"),
        (msgspec.Raw(b"1"), TypeError, "$: Raw is not a JSON type"),
        ({"s": "ok\ud800"}, ValueError, "$.s: string holds a lone surrogate U+D800, which canonical JSON cannot encode"),
        ({"a b": {"\udc00": 1}}, ValueError, '$["a b"]: object key "\\udc00" holds a lone surrogate U+DC00, which canonical JSON cannot encode'),
        ({"é": [[0.5], [math.nan]]}, ValueError, "$.é[1][0]: NaN is not allowed in canonical JSON"),
        ({"\n": math.nan}, ValueError, '$["\\n"]: NaN is not allowed in canonical JSON'),
    ],
)  # fmt: skip
def test_errors_name_the_json_path(value: Any, kind: type[Exception], message: str) -> None:
    with pytest.raises(kind) as info:
        canonical_bytes(value)
    assert str(info.value) == message
    with pytest.raises(kind):
        canonical_sha256(value)
    with pytest.raises(ValueError):  # the reference refuses it too
        rfc8785.dumps(value)


def test_the_input_is_not_modified() -> None:
    row = {"a": 1.0, "b": [0.0, 2.5, -0.0], "c": {"\U0001f602": 1, "\ufb33": 2.0}, "d": 5e-6}
    value = {"rows": [dict(row) for _ in range(3)], "big": [1.0, -0.0, 1e22, 5e-6] * 30}
    value["pool"] = [[1.0], [0.5, 3.0]]
    before = copy.deepcopy(value)
    same_as_reference(value)
    assert value == before
    assert math.copysign(1.0, value["big"][1]) == -1.0
    assert all(type(x) is float for x in value["big"])
    assert type(value["rows"][0]["a"]) is float


def test_gc_state_is_restored() -> None:
    assert gc.isenabled()
    canonical_bytes([1.0, {"a": [2.0]}])
    assert gc.isenabled()
    with pytest.raises(ValueError):
        canonical_bytes([math.nan])
    assert gc.isenabled()
    gc.disable()
    try:
        canonical_bytes([1.0, {"a": [2.0]}])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_nesting() -> None:
    deep: Any = 1.5
    for _ in range(150):
        deep = {"a": [deep, 2.0]}
    same_as_reference(deep)
    too_deep: Any = []
    for _ in range(100_000):
        too_deep = [too_deep]
    with pytest.raises(ValueError, match=r"^\$: the value nests deeper than the recursion limit"):
        canonical_bytes(too_deep)


def test_sha256() -> None:
    value = {"b": [1.0, "x", None], "a": {"c": True}}
    assert canonical_sha256(value) == hashlib.sha256(rfc8785.dumps(value)).hexdigest()
    assert len(canonical_sha256(value)) == 64


@pytest.mark.parametrize(
    ("data", "canonical_already"),
    [
        (b'{"a":1,"b":[true,null,"x",0.5]}', True),
        (b"1", True),
        (b"0", True),
        (b"100", True),
        (b"1e+21", True),
        (b'"\\u001f\\n"', True),
        ('"é€😂"'.encode(), True),
        (b'{"b":1,"a":2}', False),
        (b'{"a":1, "b":2}', False),
        (b'{"a":1,"a":1}', False),
        (b'{"a":1}\n', False),
        (b"1.0", False),
        (b"-0", False),
        (b"1E2", False),
        (b"9007199254740992", False),
        (b'"\\u00e9"', False),
        (b'"\\u001F"', False),
        (b'"\\/"', False),
        (b'"\\ud800"', False),
        (b"NaN", False),
        (b"\xff", False),
        (b"", False),
    ],
)
def test_loads_canonical_check(data: bytes, canonical_already: bool) -> None:
    assert loads_canonical_check(data) is canonical_already


def test_module_surface() -> None:
    assert canonical.__all__ == ["canonical_bytes", "canonical_sha256", "loads_canonical_check"]
    assert "fast path" in (canonical.__doc__ or "")
