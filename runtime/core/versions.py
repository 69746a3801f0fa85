"""Versions and version specs, ordered semantically (8.10 > 8.9), not as strings.

A version is dotted numbers with an optional `-prerelease` and `+build` (`8.3.4`, `v1.2.0-rc.1`).
A spec is `latest`, an exact version (`8.3.4`), or a wildcard (`8.3.x`, `8.x`, `8.3.*`).
A partial version is a wildcard, as mise and asdf users expect: `8` is `8.x` (the newest 8),
`8.3` is `8.3.x`; three numbers or more, or a prerelease or build, are exact.
Wildcards and `latest` never pick a prerelease; an exact spec may name one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

__all__ = ["Version", "VersionSpec", "pick_highest"]

_VERSION_RE = re.compile(
    r"^v?(?P<nums>\d+(?:\.\d+)*)(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+(?P<build>[0-9A-Za-z.-]+))?$"
)


def _pre_key(pre: str) -> tuple[tuple[int, int, str], ...]:
    # semver 11.4: numeric identifiers sort numerically and below alphanumeric ones.
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))


class Version(msgspec.Struct, frozen=True):
    text: str
    numbers: tuple[int, ...]
    prerelease: str = ""
    build: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        m = _VERSION_RE.match(text.strip())
        if not m:
            raise ValueError(f"{text!r} is not a version (expected dotted numbers like 8.3.4)")
        nums = tuple(int(n) for n in m.group("nums").split("."))
        return cls(text, nums, m.group("pre") or "", m.group("build") or "")

    @classmethod
    def try_parse(cls, text: str) -> Version | None:
        try:
            return cls.parse(text)
        except ValueError:
            return None

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    def _padded(self, width: int) -> tuple[int, ...]:
        return self.numbers + (0,) * (width - len(self.numbers))

    def sort_key(self) -> tuple[object, ...]:
        # Trailing zeros do not matter (8.3 == 8.3.0); a release sorts above its prereleases;
        # the text breaks the remaining ties so the order is total.
        nums = self.numbers
        while len(nums) > 1 and nums[-1] == 0:
            nums = nums[:-1]
        pre = (1, ()) if not self.prerelease else (0, _pre_key(self.prerelease))
        return (nums, pre)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.sort_key() == other.sort_key()

    def __hash__(self) -> int:
        return hash(self.sort_key())

    def _cmp_key(self, other: Version) -> tuple[tuple[object, ...], tuple[object, ...]]:
        width = max(len(self.numbers), len(other.numbers))
        return (self._padded(width), self.sort_key()[1]), (
            other._padded(width),
            other.sort_key()[1],
        )

    # All four spelled out: a Struct's own comparisons would answer the ones a
    # functools.total_ordering fills in (it sees them defined), and refuse them.
    def __lt__(self, other: Version) -> bool:
        a, b = self._cmp_key(other)
        return a < b

    def __le__(self, other: Version) -> bool:
        a, b = self._cmp_key(other)
        return a <= b

    def __gt__(self, other: Version) -> bool:
        a, b = self._cmp_key(other)
        return a > b

    def __ge__(self, other: Version) -> bool:
        a, b = self._cmp_key(other)
        return a >= b

    def __str__(self) -> str:
        return self.text


class VersionSpec(msgspec.Struct, frozen=True):
    text: str
    kind: str  # "latest" | "exact" | "wildcard"
    prefix: tuple[int, ...] = ()
    exact: Version | None = None

    @classmethod
    def parse(cls, text: str) -> VersionSpec:
        spec = text.strip()
        if spec in ("latest", "*", "x"):
            return cls(spec, "latest")
        parts = spec.lstrip("v").split(".")
        if parts and parts[-1] in ("x", "X", "*"):
            head = parts[:-1]
            if head and all(p.isdigit() for p in head):
                return cls(spec, "wildcard", tuple(int(p) for p in head))
            raise ValueError(f"{text!r} is not a version spec (expected latest, 8.3.4 or 8.3.x)")
        version = Version.try_parse(spec)
        if version is None:
            raise ValueError(f"{text!r} is not a version spec (expected latest, 8.3.4 or 8.3.x)")
        if len(version.numbers) < 3 and not version.prerelease and not version.build:
            return cls(spec, "wildcard", version.numbers)  # `8`: the newest 8.x
        return cls(spec, "exact", exact=version)

    def matches(self, version: Version | str) -> bool:
        v = Version.parse(version) if isinstance(version, str) else version
        if self.kind == "exact":
            return v == self.exact
        if v.is_prerelease:
            return False
        if self.kind == "latest":
            return True
        return v.numbers[: len(self.prefix)] == self.prefix and len(v.numbers) >= len(self.prefix)

    def __str__(self) -> str:
        return self.text


def pick_highest(spec: VersionSpec, versions: Iterable[str]) -> str | None:
    """The highest of ``versions`` that ``spec`` matches; unparseable versions are skipped."""
    best: tuple[Version, str] | None = None
    for text in versions:
        v = Version.try_parse(text)
        if v is None or not spec.matches(v):
            continue
        if best is None or v > best[0]:
            best = (v, text)
    return best[1] if best else None
