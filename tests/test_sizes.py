"""runtime.sizes.format_bytes: one formatter, four styles, each pinned where its readers see it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runyard.runtime.core.sizes import ByteStyle, format_bytes

KIB, MIB, GIB, TIB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("n", "iec", "prose", "compact", "tenths"),
    [
        (0, "0 B", "0 bytes", "0B", "0B"),
        (512, "512 B", "512 bytes", "512B", "512B"),
        (1023, "1023 B", "1023 bytes", "1023B", "1023B"),
        (1024, "1.0 KiB", "1.0 KiB", "1.0K", "1.0K"),
        (1536, "1.5 KiB", "1.5 KiB", "1.5K", "1.5K"),
        (34 * MIB, "34.0 MiB", "34.0 MiB", "34M", "34.0M"),
        (150 * MIB, "150.0 MiB", "150.0 MiB", "150M", "150.0M"),
        (int(1.2 * GIB), "1.2 GiB", "1.2 GiB", "1.2G", "1.2G"),
        (3 * TIB, "3.0 TiB", "3.0 TiB", "3.0T", "3.0T"),
        (2048 * TIB, "2048.0 TiB", "2048.0 TiB", "2048T", "2048.0T"),
    ],
)
def test_each_style_writes_what_its_readers_expect(
    n: int, iec: str, prose: str, compact: str, tenths: str
) -> None:
    assert format_bytes(n) == iec  # the CLI's default
    assert format_bytes(n, ByteStyle.IEC) == iec
    assert format_bytes(n, ByteStyle.PROSE) == prose
    assert format_bytes(n, ByteStyle.COMPACT) == compact
    assert format_bytes(n, ByteStyle.TENTHS) == tenths


@given(st.integers(min_value=0, max_value=99_999 * TIB))
def test_compact_fits_six_characters(n: int) -> None:
    assert len(format_bytes(n, ByteStyle.COMPACT)) <= 6


@given(st.integers(min_value=0, max_value=2**60))
def test_styles_agree_on_the_number(n: int) -> None:
    """The styles differ in how they write a size, never in which size they write."""
    iec = format_bytes(n, ByteStyle.IEC)
    number, unit = iec.split(" ")
    assert format_bytes(n, ByteStyle.PROSE).split(" ")[0] == number
    assert format_bytes(n, ByteStyle.TENTHS) == number + unit[0]
