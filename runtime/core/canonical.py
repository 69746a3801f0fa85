"""Canonical JSON (RFC 8785, JCS) of a JSON value: the bytes Runyard hashes when it seals a run.

``canonical_bytes(value)`` is byte for byte ``rfc8785.dumps(value)``, the reference, for every
value ``rfc8785`` accepts, about 10x faster (``scripts/bench canonical``): ``msgspec`` writes
the bytes (``order="sorted"``), after a walk over the value has proved that what msgspec will
write is exactly JCS, and has patched the few values where it is not.

The fast path, and what it proves (tests/test_canonical.py tests each claim):

- *Types.* Only exact ``dict``, ``list``, ``tuple``, ``str``, ``int``, ``float``, ``bool`` and
  ``None`` stay on it. Anything else (subclasses, Enums, sets, bytes, Structs...) sends the
  whole value to the slow path, because msgspec would encode much of it where JCS must refuse
  or writes something else (bytes as base64, sets as arrays, NaN as ``null``, an Enum by
  value, where rfc8785 writes a str or int subclass by content).
- *Strings* need no check: msgspec escapes exactly what JCS escapes, ``"``, ``\\`` and the
  controls below U+0020, as ``\\b \\f \\n \\r \\t`` or lowercase ``\\u00xx``, and writes
  everything else (DEL, U+2028, U+2029, all non-ASCII) as raw UTF-8. Like rfc8785, it refuses
  lone surrogates (the slow path then names the string).
- *Keys* must be ``str`` (a subclass is written by its content, as rfc8785 writes it).
  msgspec sorts keys by their UTF-8 bytes, which is code point order; JCS sorts by UTF-16
  code units. The two orders agree unless a key holds a character above U+FFFF, so an object
  with such a key is written by ``rfc8785.dumps`` and spliced in whole (``msgspec.Raw``).
- *Integers* must lie within ±(2**53-1) (checked in C by ``msgspec.convert`` with bounds, or
  for a long list, only if msgspec's bytes for it hold a run of 16 digits); both write digits.
- *Floats.* msgspec (Ryu) and rfc8785 (Python's ``repr``) both write the shortest digits that
  round-trip; they differ only in layout. In msgspec's bytes for a group of floats, each
  token is: ``null`` for NaN or ±Infinity (refused); for a whole number below 1e16, its digits
  and ``.0`` (the only tokens ending in ``.0``: fraction digits never end in 0); plain
  ``123.456`` for the others from 1e-5 up, as JCS writes them; ``1.5e-7`` for exponents of -7
  and below, as JCS writes them. The rest is rewritten: whole numbers below 2**53 become the
  ``int`` JCS prints (``3.0`` -> ``3``, ``-0.0`` -> ``0``); exponent -6 (1e-6 <= |f| < 1e-5)
  becomes ``0.00000`` and the same digits (ECMA-262 Number::toString, -6 < n <= 0); positive
  exponents (whole numbers from 1e16) become ``rfc8785.dumps(f)``.
- msgspec writes no whitespace and splices ``msgspec.Raw`` verbatim, and the JCS of a
  container is the JCS of its members joined by ``,`` and ``:``, so spliced pieces compose.

The walk is cheap because it never visits containers one by one: all the values at one depth
are checked together, with C-speed passes (``map(type, ...)``, ``str.join``, slicing, bytes
searches), never a Python loop per value. The lists at one depth are pooled; dicts that all
have the same keys in the same order (records) are checked column by column; a long list of
ints or floats is encoded once, fixed in its bytes, and spliced in as ``msgspec.Raw``. Only the
values to rewrite cost Python work. The input is never modified (rewrites go into copies), and
the cyclic GC is paused during the walk, which makes many short-lived lists (``gc.disable()``
is process-wide; it is re-enabled after, unless it was off before).

The slow path, for anything else: the value is rebuilt as exact JSON types, naming the JSON
path of the first thing that is not JSON, and the fast path runs on that. Errors are one line:

- ``TypeError``: not a JSON type (bytes, set, an object...), or an object key that is not a
  str: ``$.outputs.blob: bytes is not a JSON type``;
- ``ValueError``: NaN or ±Infinity, an integer outside ±(2**53-1), a lone surrogate in a
  string or key, or nesting deeper than the recursion limit:
  ``$.outputs.x: NaN is not allowed in canonical JSON``.

Accepted as ``rfc8785`` accepts them: tuples (arrays), and subclasses of dict, list, tuple,
str, int and float (``IntEnum`` and ``StrEnum`` members included), as their plain value.

Accepted unlike ``rfc8785``: a ``msgspec.Struct`` anywhere in the value stands for
``msgspec.to_builtins(struct, order="deterministic")``, the object msgspec would encode for it
(renames, ``omit_defaults``, tags), including msgspec's conversion of its fields' values
(bytes -> base64, datetime -> RFC 3339 string, set -> sorted array...). That is then checked
like any value, so a NaN field is still refused.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from functools import partial
from itertools import accumulate, chain, compress, count, repeat
from math import isfinite
from operator import countOf, is_, methodcaller
from typing import Annotated, Any

import msgspec
import rfc8785

__all__ = ["canonical_bytes", "canonical_sha256", "loads_canonical_check"]

_MAX_SAFE_INT = 2**53 - 1
_TWO_53 = float(2**53)
#: Lists at least this long are checked on their own, and a list of ints or floats that needs
#: no patch goes into msgspec's input as the Raw bytes the check made; shorter lists are
#: pooled with their siblings, so that they share the per-list cost.
_BIG_LIST = 64
#: In msgspec's bytes for ints, every digit made "9": 16 of them in a row may exceed 2**53-1.
_DIGITS_TO_9 = bytes.maketrans(b"0123456789", b"9" * 10)
_SIXTEEN_DIGITS = b"9" * 16
#: In the bytes of a list of floats once ".0" is cut: the token -0 (it was -0.0).
_MINUS_ZERO = re.compile(rb"-0(?=[,\]])")
_ends_minus_zero = methodcaller("endswith", (b",-0", b"[-0"))
_MANY_WHOLE = 4096
_UNCHECKED = frozenset({str, bool, type(None)})

_encode = msgspec.json.Encoder(order="sorted").encode
_SafeInts = list[Annotated[int, msgspec.Meta(ge=-_MAX_SAFE_INT, le=_MAX_SAFE_INT)]]
_check_safe_ints = partial(msgspec.convert, type=_SafeInts)
_Raw = msgspec.Raw

#: Position in a sequence -> what msgspec must encode there instead of the item.
_Patches = dict[int, Any]


class _Refused(Exception):
    """The fast path cannot take this value; the slow path will convert it or say why not."""


# ----------------------------------------------------------------------------------------
# Fast path. Each _fix_* takes a sequence of items (all of one exact type, except in
# _fix_items) and returns the patches that make msgspec write JCS: usually none. Containers
# are not visited one by one: all the lists (or dicts) at one depth are checked together.


def _fix_items(items: Sequence[Any], types: list[type] | None = None) -> _Patches:
    """Items of any types: the items of each type are checked together."""
    n = len(items)
    if not n:
        return {}
    if types is None:
        types = list(map(type, items))
    first = types[0]
    if types.count(first) == n:
        if first in _UNCHECKED:
            return {}
        fixer = _FIXERS.get(first)
        if fixer is None:
            raise _Refused
        return fixer(items)
    patches: _Patches = {}
    for kind in set(types):
        if kind in _UNCHECKED:
            continue
        fixer = _FIXERS.get(kind)
        if fixer is None:
            raise _Refused
        found = fixer(list(compress(items, map(is_, types, repeat(kind)))))
        if found:
            where = list(compress(count(), map(is_, types, repeat(kind))))
            for j, value in found.items():
                patches[where[j]] = value
    return patches


def _fix_ints(ints: Sequence[int]) -> _Patches:
    try:
        _check_safe_ints(ints)  # in C: faster than min() and max()
    except msgspec.ValidationError:
        raise _Refused from None
    return {}


def _scan_ints(ints: Sequence[int]) -> bytes:
    """msgspec's bytes for ``ints`` (plain digits, as JCS); _Refused beyond ±(2**53-1)."""
    data = _encode(ints)
    if _SIXTEEN_DIGITS in data.translate(_DIGITS_TO_9):  # 16 digits: maybe beyond 2**53-1
        _fix_ints(ints)
    return data


def _fix_floats(floats: Sequence[float]) -> _Patches:
    return _scan_floats(floats)[1]


def _scan_floats(floats: Sequence[float]) -> tuple[bytes, _Patches]:
    """msgspec's bytes for ``floats`` (exact floats), and the patches that make them JCS.

    msgspec writes ``[t1,t2,...]``, each token the shortest round-trip digits of a float:
    ``null`` for NaN and inf (refused); a whole number below 1e16 as its digits and ``.0``,
    the only tokens that end in ``.0`` (fractions have no trailing zeros and exponents end in
    a digit), which becomes the int JCS prints (-0.0 as 0); ``1.5e-7`` as JCS does for an
    exponent of -7 and below; any other exponent (e-6, or positive: a whole number from 1e16)
    becomes rfc8785's bytes. A token's position is the number of commas before it.
    """
    data = _encode(floats)
    if b"n" in data:  # null: NaN or inf, refused
        raise _Refused
    patches: _Patches = {}
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


def _float_list(floats: list[float]) -> bytes:
    """The JCS bytes of a whole list of exact floats, made from msgspec's in C (not patched).

    In msgspec's bytes (see _scan_floats) an exponent token JCS writes otherwise is replaced
    by rfc8785's bytes for that float. Then ``.0,`` and a final ``.0]`` occur only at the end
    of whole-number tokens (rfc8785 never writes ``.0``), so cutting every such ``.0`` leaves
    the digits JCS writes, and the token ``-0`` (from -0.0; no other token is ``-0``) becomes
    ``0``.
    """
    data = _encode(floats)
    if b"n" in data:  # null: NaN or inf, refused
        raise _Refused
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


def _wide(keys: str) -> bool:
    """Whether some character is above U+FFFF (code point order != UTF-16 order)."""
    return not keys.isascii() and max(keys) > "\uffff"


def _fix_dicts(dicts: Sequence[dict[Any, Any]]) -> _Patches:
    n = len(dicts)
    keys = list(chain.from_iterable(dicts))
    values = list(chain.from_iterable(map(dict.values, dicts)))
    width = len(dicts[0])
    # Records: every dict has the first one's keys, in its order? Then check by column.
    records = (
        width > 0
        and countOf(map(len, dicts), width) == n
        and all(keys[k::width].count(keys[k]) == n for k in range(width))
    )
    try:
        wide = _wide("".join(keys[:width] if records else keys))
    except TypeError:  # a key is not a str
        raise _Refused from None
    patches: _Patches = {}
    if wide:  # rare: objects with such keys are written by rfc8785
        for i, d in enumerate(dicts):
            if records or _wide("".join(d)):
                patches[i] = _Raw(rfc8785.dumps(d))
        if records:
            return patches
    if records:
        for k in range(width):
            for i, value in _fix_items(values[k::width]).items():
                new = patches.get(i)
                if new is None:
                    new = patches[i] = dicts[i].copy()
                new[keys[k]] = value
        return patches
    found = _fix_items(values)
    if found:
        ends = list(accumulate(map(len, dicts)))
        changes: dict[int, dict[int, Any]] = {}
        for j, value in found.items():
            i = bisect_right(ends, j)
            changes.setdefault(i, {})[j - (ends[i - 1] if i else 0)] = value
        for i, change in changes.items():
            if i in patches:  # already written whole by rfc8785
                continue
            new_values = list(dicts[i].values())
            for offset, value in change.items():
                new_values[offset] = value
            patches[i] = dict(zip(dicts[i], new_values, strict=True))
    return patches


def _fix_lists(lists: Sequence[list[Any] | tuple[Any, ...]]) -> _Patches:
    patches: _Patches = {}
    lengths = list(map(len, lists))
    pool: Sequence[Sequence[Any]] = lists
    where: list[int] | None = None  # pool[p] is lists[where[p]]
    if max(lengths) >= _BIG_LIST:
        for i in compress(count(), map(_BIG_LIST.__le__, lengths)):
            items = lists[i]
            kind = type(items[0])
            types = list(map(type, items))
            if types.count(kind) == len(items):
                if kind is float:
                    patches[i] = _Raw(_float_list(items))  # type: ignore[arg-type]
                    continue
                if kind is int:
                    patches[i] = _Raw(_scan_ints(items))
                    continue
            found = _fix_items(items, types)
            if found:
                new = patches[i] = list(items)
                for j, value in found.items():
                    new[j] = value
        where = list(compress(count(), map(_BIG_LIST.__gt__, lengths)))
        pool = list(map(lists.__getitem__, where))
    found = _fix_items(list(chain.from_iterable(pool)))
    if found:
        ends = list(accumulate(map(len, pool)))
        for j, value in found.items():
            p = bisect_right(ends, j)
            i = p if where is None else where[p]
            new = patches.get(i)
            if new is None:
                new = patches[i] = list(pool[p])
            new[j - (ends[p - 1] if p else 0)] = value
    return patches


_FIXERS: dict[type, Callable[[Any], _Patches]] = {
    int: _fix_ints,
    float: _fix_floats,
    dict: _fix_dicts,
    list: _fix_lists,
    tuple: _fix_lists,
}


def _fast(value: object) -> bytes:
    """JCS bytes via msgspec; _Refused (or msgspec's error) when the walk cannot prove it."""
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the walk makes many short-lived lists; collections would only cost time
    try:
        return _encode(_fix_items((value,)).get(0, value))
    finally:
        if gc_was_enabled:
            gc.enable()


# ----------------------------------------------------------------------------------------
# Slow path: plain JSON types, or an error naming the JSON path.


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"


def _check_str(s: str, path: str, what: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = ord(s[e.start])
        raise ValueError(
            f"{path}: {what} holds a lone surrogate U+{bad:04X}, which canonical JSON cannot encode"
        ) from None
    return s


def _plain(value: object, path: str) -> Any:
    """``value`` as exact JSON types, checked, in the order rfc8785 tests them."""
    if value is None or value is True or value is False:
        return value
    if isinstance(value, msgspec.Struct):
        try:
            built = msgspec.to_builtins(value, order="deterministic")
        except (TypeError, ValueError) as e:
            raise TypeError(f"{path}: {type(value).__name__}: {_short(str(e))}") from None
        return _plain(built, path)
    if isinstance(value, int):
        n = int(value)
        if -_MAX_SAFE_INT <= n <= _MAX_SAFE_INT:
            return n
        shown = str(n) if n.bit_length() <= 256 else f"of {n.bit_length()} bits"
        raise ValueError(
            f"{path}: integer {shown} is outside ±(2**53-1), the range canonical JSON allows"
        )
    if isinstance(value, str):
        return _check_str(str.__str__(value), path, "string")
    if isinstance(value, float):
        f = float(value)
        if isfinite(f):
            return f
        name = "NaN" if f != f else ("Infinity" if f > 0 else "-Infinity")
        raise ValueError(f"{path}: {name} is not allowed in canonical JSON")
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{path}: object key {_short(key)} ({type(key).__name__}) is not a string"
                )
            key = _check_str(str.__str__(key), path, f"object key {json.dumps(key)}")
            out[key] = _plain(item, _key_path(path, key))
        return out
    raise TypeError(f"{path}: {type(value).__name__} is not a JSON type")


def _short(obj: object) -> str:
    text = " ".join(repr(obj).split())
    return text if len(text) <= 40 else text[:37] + "..."


# ----------------------------------------------------------------------------------------


def canonical_bytes(value: object) -> bytes:
    """The RFC 8785 canonical JSON of ``value``: byte for byte ``rfc8785.dumps(value)``.

    Raises TypeError or ValueError, one line naming the JSON path, when ``value`` is not JSON
    (see the module docstring); a msgspec.Struct counts as ``msgspec.to_builtins`` of it.
    """
    try:
        return _fast(value)
    except (_Refused, TypeError, ValueError, RecursionError):  # ValueError: lone surrogates
        pass
    try:
        plain = _plain(value, "$")
    except RecursionError:
        raise ValueError(
            "$: the value nests deeper than the recursion limit (or contains itself)"
        ) from None
    try:
        return _fast(plain)
    except (_Refused, RecursionError):  # not expected: plain is checked; the reference then
        return rfc8785.dumps(plain)


def canonical_sha256(value: object) -> str:
    """Hex sha256 of :func:`canonical_bytes` of ``value``."""
    return hashlib.sha256(canonical_bytes(value)).hexdigest()


def loads_canonical_check(data: bytes) -> bool:
    """Whether ``data`` is a JSON document already in RFC 8785 canonical form.

    False for anything else: invalid JSON or UTF-8, whitespace, unsorted or duplicate keys,
    numbers or escapes written another way, values canonical JSON refuses.
    """
    try:
        value = msgspec.json.decode(data)
        return canonical_bytes(value) == data
    except (msgspec.DecodeError, TypeError, ValueError, RecursionError):
        return False
