"""Version order and spec resolution, including property tests with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runyard.runtime.core.versions import Version, VersionSpec, pick_highest

nums = st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=4)
versions = nums.map(lambda n: ".".join(map(str, n)))


@given(st.lists(versions, min_size=1, max_size=30))
def test_latest_is_the_numeric_maximum(vs: list[str]) -> None:
    best = pick_highest(VersionSpec.parse("latest"), vs)

    def padded(v: str) -> tuple[int, ...]:
        return (tuple(int(p) for p in v.split(".")) + (0,) * 8)[:8]

    assert padded(best) == max(padded(v) for v in vs)
    assert all(Version.parse(best) >= Version.parse(v) for v in vs)


@given(st.lists(versions, max_size=30), nums.filter(lambda n: len(n) <= 3))
def test_wildcard_picks_highest_with_prefix_and_nothing_else(
    vs: list[str], prefix: list[int]
) -> None:
    spec = VersionSpec.parse(".".join(map(str, prefix)) + ".x")
    matching = [v for v in vs if [int(p) for p in v.split(".")][: len(prefix)] == prefix]
    best = pick_highest(spec, vs)
    if not matching:
        assert best is None
    else:
        assert best in matching
        assert all(Version.parse(best) >= Version.parse(v) for v in matching)


@given(versions, versions)
def test_order_is_total_and_consistent(a: str, b: str) -> None:
    va, vb = Version.parse(a), Version.parse(b)
    assert (va < vb) + (va > vb) + (va == vb) == 1
    if va == vb:
        assert hash(va) == hash(vb)
    assert (va < vb) == (vb > va)


@given(nums.filter(lambda n: len(n) >= 3).map(lambda n: ".".join(map(str, n))))
def test_exact_spec_matches_itself(v: str) -> None:
    assert pick_highest(VersionSpec.parse(v), [v, v + ".1"]) in (v,)


@pytest.mark.parametrize(
    ("spec", "available", "expected"),
    [
        ("8.3.x", ["8.3.4", "8.3.10", "8.30.1", "8.4.0"], "8.3.10"),
        ("8.x", ["8.9.0", "8.10.0", "9.0.0"], "8.10.0"),
        ("8.3.*", ["8.3.1", "8.3.2"], "8.3.2"),
        ("latest", ["1.9", "1.10", "2.0.0-rc.1"], "1.10"),
        ("2.0.0-rc.1", ["2.0.0-rc.1", "2.0.0"], "2.0.0-rc.1"),
        ("8.3.x", ["8.3.5-beta", "8.3.4"], "8.3.4"),
        ("v1.2.3", ["1.2.3"], "1.2.3"),
        ("1.2.0", ["1.2.0", "1.2.1"], "1.2.0"),
        ("9.x", ["8.0.0"], None),
    ],
)
def test_spec_examples(spec: str, available: list[str], expected: str | None) -> None:
    assert pick_highest(VersionSpec.parse(spec), available) == expected


def test_prerelease_orders_below_release_and_numerically() -> None:
    order = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0",
    ]
    assert sorted(order, key=Version.parse) == order


@pytest.mark.parametrize("bad", ["", "x.y", "1..2", "8.3.x.x", "latest-ish", "a.x"])
def test_bad_specs_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="version spec"):
        VersionSpec.parse(bad)


@pytest.mark.parametrize(
    ("spec", "available", "expected"),
    [
        ("1", ["1.0.0", "1.4.2", "1.10.0-rc.1", "2.0.0"], "1.4.2"),
        ("v1", ["1.0.0", "1.4.2"], "1.4.2"),
        ("1.2", ["1.2.0", "1.2.1", "1.3.0"], "1.2.1"),
        ("1.2", ["1.2"], "1.2"),
        ("3", ["1.0.0", "2.9.9"], None),
    ],
)
def test_a_partial_version_means_the_newest_of_its_series_as_in_mise(
    spec: str, available: list[str], expected: str | None
) -> None:
    """`runtime ensure redis 7` gave 7.0.0 (an exact 7 == 7.0.0), not the newest 7.x."""
    assert pick_highest(VersionSpec.parse(spec), available) == expected
