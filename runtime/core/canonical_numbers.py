"""Numbers in canonical JSON (RFC 8785): msgspec's bytes for ints and floats, proved or
patched into what JCS writes (ECMAScript's Number::toString of a double).

Part of the fast path of ``runtime.core.canonical`` (its docstring states the claims, under
*Integers* and *Floats*; tests/test_canonical.py tests each). Each function takes items all of
one exact type, ``int`` or ``float``, and either returns msgspec's bytes for a whole list,
already JCS, or the patches that make msgspec write JCS; ``FastPathRefused`` when no patch can (an
integer beyond ±(2**53-1), NaN, ±Infinity).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from operator import countOf, methodcaller
from typing import Annotated, Any

import msgspec
import rfc8785

from runyard.runtime.core.errors import FastPathRefused

__all__ = [
    "MAX_SAFE_INT",
    "Patches",
    "encode_sorted",
    "fix_floats",
    "fix_ints",
    "float_list",
    "scan_ints",
]

MAX_SAFE_INT = 2**53 - 1
_TWO_53 = float(2**53)
#: In msgspec's bytes for ints, every digit made "9": 16 of them in a row may exceed 2**53-1.
_DIGITS_TO_9 = bytes.maketrans(b"0123456789", b"9" * 10)
_SIXTEEN_DIGITS = b"9" * 16
#: In the bytes of a list of floats once ".0" is cut: the token -0 (it was -0.0).
_MINUS_ZERO = re.compile(rb"-0(?=[,\]])")
_ends_minus_zero = methodcaller("endswith", (b",-0", b"[-0"))
_MANY_WHOLE = 4096

#: msgspec's JSON, keys sorted by code point; the one encoder of the fast path.
encode_sorted = msgspec.json.Encoder(order="sorted").encode
_SafeInts = list[Annotated[int, msgspec.Meta(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)]]
_check_safe_ints = partial(msgspec.convert, type=_SafeInts)
_Raw = msgspec.Raw

#: Position in a sequence -> what msgspec must encode there instead of the item.
Patches = dict[int, Any]


def fix_ints(ints: Sequence[int]) -> Patches:
    try:
        _check_safe_ints(ints)  # in C: faster than min() and max()
    except msgspec.ValidationError:
        raise FastPathRefused from None
    return {}


def scan_ints(ints: Sequence[int]) -> bytes:
    """msgspec's bytes for ``ints`` (plain digits, as JCS); FastPathRefused beyond ±(2**53-1)."""
    data = encode_sorted(ints)
    if _SIXTEEN_DIGITS in data.translate(_DIGITS_TO_9):  # 16 digits: maybe beyond 2**53-1
        fix_ints(ints)
    return data


def fix_floats(floats: Sequence[float]) -> Patches:
    return _scan_floats(floats)[1]


def _scan_floats(floats: Sequence[float]) -> tuple[bytes, Patches]:
    """msgspec's bytes for ``floats`` (exact floats), and the patches that make them JCS.

    msgspec writes ``[t1,t2,...]``, each token the shortest round-trip digits of a float:
    ``null`` for NaN and inf (refused); a whole number below 1e16 as its digits and ``.0``,
    the only tokens that end in ``.0`` (fractions have no trailing zeros and exponents end in
    a digit), which becomes the int JCS prints (-0.0 as 0); ``1.5e-7`` as JCS does for an
    exponent of -7 and below; any other exponent (e-6, or positive: a whole number from 1e16)
    becomes rfc8785's bytes. A token's position is the number of commas before it.
    """
    data = encode_sorted(floats)
    if b"n" in data:  # null: NaN or inf, refused
        raise FastPathRefused
    patches: Patches = {}
    if b".0," in data or data.endswith(b".0]"):
        whole = list(map(float.is_integer, floats))
        i = -1
        for _ in range(whole.count(True)):  # list.index scans in C
            i = whole.index(True, i + 1)
            patches[i] = _whole(floats[i])
    at = data.find(b"e")
    if at >= 0:
        i = seen = 0
        last = len(data) - 1  # the closing ]
        while at >= 0:
            i += data.count(b",", seen, at)
            seen = at
            end = data.find(b",", at)
            if end < 0:
                end = last
            if data[at + 1] != 0x2D or data[at + 1 : end] == b"-6":  # 0x2D: "-"
                start = data.rfind(b",", 0, at) + 1 or 1  # 1: after the opening [
                patches[i] = _Raw(_exponent_token(data[start:end]))
            at = data.find(b"e", end)
    return data, patches


def float_list(floats: list[float]) -> bytes:
    """The JCS bytes of a whole list of exact floats, made from msgspec's in C (not patched).

    In msgspec's bytes (see _scan_floats) an exponent token JCS writes otherwise is replaced
    by rfc8785's bytes for that float. Then ``.0,`` and a final ``.0]`` occur only at the end
    of whole-number tokens (rfc8785 never writes ``.0``), so cutting every such ``.0`` leaves
    the digits JCS writes, and the token ``-0`` (from -0.0; no other token is ``-0``) becomes
    ``0``.
    """
    data = encode_sorted(floats)
    if b"n" in data:  # null: NaN or inf, refused
        raise FastPathRefused
    if b"e" in data:
        data = _fix_exponents(data)
    if any(map(float.is_integer, floats)):
        minus_zero = data.endswith((b",-0.0]", b"[-0.0]"))
        parts = data.split(b".0,", _MANY_WHOLE)
        if len(parts) <= _MANY_WHOLE:  # all split: each part but the last ends with a token
            minus_zero = minus_zero or countOf(parts, b"-0") or any(map(_ends_minus_zero, parts))
            data = b",".join(parts)
        else:  # replace is faster when most tokens are whole numbers
            data = data.replace(b".0,", b",")
            minus_zero = minus_zero or 0.0 in floats  # 0.0 or -0.0
        if data.endswith(b".0]"):
            data = data[:-3] + b"]"
        if minus_zero:
            data = _MINUS_ZERO.sub(b"0", data)
    return data


def _fix_exponents(data: bytes) -> bytes:
    """Replace the exponent tokens JCS writes otherwise (e-6, positive) by rfc8785's."""
    pieces = []
    done = 0
    at = data.find(b"e")
    while at >= 0:
        end = data.find(b",", at)
        if end < 0:
            end = len(data) - 1  # the closing ]
        if data[at + 1] != 0x2D or data[at + 1 : end] == b"-6":  # 0x2D: "-"
            start = data.rfind(b",", 0, at) + 1 or 1  # 1: after the opening [
            pieces += (data[done:start], _exponent_token(data[start:end]))
            done = end
        at = data.find(b"e", end)
    if not pieces:
        return data
    pieces.append(data[done:])
    return b"".join(pieces)


def _exponent_token(token: bytes) -> bytes:
    """JCS for a msgspec float token whose exponent is positive or -6.

    With exponent -6 (1e-6 <= |f| < 1e-5) ES6 writes the same digits as ``0.00000ddd``
    (ECMA-262 Number::toString, case -6 < n <= 0); other exponents go to rfc8785.
    """
    if token.endswith(b"e-6"):
        sign = b"-" if token.startswith(b"-") else b""
        return sign + b"0.00000" + token[len(sign) : -3].replace(b".", b"")
    return rfc8785.dumps(float(token))


def _whole(f: float) -> Any:
    """A whole-number float as JCS writes it: below 2**53 those are the int's digits."""
    return int(f) if -_TWO_53 < f < _TWO_53 else _Raw(rfc8785.dumps(f))
