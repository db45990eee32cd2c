"""Go durations and byte sizes (rxsinks._service.units)."""

from __future__ import annotations

import datetime
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rxsinks._service.units import parse_duration, parse_size

NS = 1e-9


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        # the examples of Go's own time.ParseDuration tests
        ("0", 0.0),
        ("5s", 5.0),
        ("30s", 30.0),
        ("1478s", 1478.0),
        ("-5s", -5.0),
        ("+5s", 5.0),
        ("-0", 0.0),
        ("+0", 0.0),
        ("5.0s", 5.0),
        ("5.6s", 5.6),
        ("5.s", 5.0),
        (".5s", 0.5),
        ("1.0s", 1.0),
        ("1.00s", 1.0),
        ("1.004s", 1.004),
        ("1.0040s", 1.004),
        ("100.00100s", 100.001),
        ("10ns", 10 * NS),
        ("11us", 11e-6),
        ("12µs", 12e-6),  # MICRO SIGN
        ("12μs", 12e-6),  # GREEK SMALL LETTER MU
        ("300us", 300e-6),
        ("300µs", 300e-6),
        ("13ms", 0.013),
        ("500ms", 0.5),
        ("14s", 14.0),
        ("15m", 900.0),
        ("16h", 57600.0),
        ("3h30m", 12600.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("10.5s4m", 250.5),
        ("-2m3.4s", -123.4),
        ("1h2m3s4ms5us6ns", 3723.004005006),
        ("39h9m14.425s", 140954.425),
        ("52763797000ns", 52.763797),
        ("0.3333333333333333333h", 1200.0),
        ("9007199254740993ns", 9007199254740993 * NS),
        ("9223372036854775807ns", 9223372036854775807 * NS),
        ("-9223372036854775808ns", -9223372036854775808 * NS),
        ("  2s  ", 2.0),  # surrounding white space, as an env variable may carry
        # a string of digits is nanoseconds, like the YAML number it stands for
        ("1500", 1500 * NS),
        ("1000000000", 1.0),
    ],
)
def test_go_duration_strings(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (500, 500 * NS),  # a YAML number is nanoseconds, as in the registry
        (1_500_000_000, 1.5),
        (0, 0.0),
        (-1, -1 * NS),
        (2.9, 2 * NS),  # yaml.v2 truncates a float to whole nanoseconds
        (1e9, 1.0),
        (datetime.timedelta(milliseconds=250), 0.25),
    ],
)
def test_numbers_are_nanoseconds(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds, rel=1e-12, abs=1e-15)


def test_exact_nanoseconds() -> None:
    # integer arithmetic: no float drift in any component
    assert parse_duration("1h1ns") == 3_600_000_000_001 / 10**9
    assert parse_duration("0.1s0.2s") == 0.3


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("fast", "'fast' does not start with a number"),
        ("1.5", "missing unit"),
        ("-", "empty"),
        (".", "'.' does not start with a number"),
        (".s", "does not start with a number"),
        ("1sec", "unknown unit 'sec'"),
        ("1d", "unknown unit 'd'"),
        ("1S", "unknown unit 'S'"),
        ("1h-5m", "unknown unit 'h-'"),  # Go reads the unit up to the next digit too
        ("1h 5m", "unknown unit 'h '"),
        ("s", "does not start with a number"),
        ("9223372036854775808ns", "out of range"),
        ("3000000h", "out of range"),
        (True, None),
        (None, "NoneType"),
        ([1], "list"),
        (float("nan"), None),
        (float("inf"), None),
        (2**63, "out of range"),
    ],
)
def test_not_durations(value: object, reason: str | None) -> None:
    with pytest.raises(ValueError, match="expected a Go duration like 500ms or 1s") as info:
        parse_duration(value)
    assert repr(value) in str(info.value)
    if reason:
        assert reason in str(info.value)


_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9}
_UNITS |= {"m": 60 * 10**9, "h": 3600 * 10**9}

_component = st.tuples(
    st.integers(min_value=0, max_value=10**6),
    st.one_of(st.none(), st.text(alphabet="0123456789", min_size=0, max_size=12)),
    st.sampled_from(sorted(_UNITS)),
)


@given(
    sign=st.sampled_from(["", "+", "-"]),
    components=st.lists(_component, min_size=1, max_size=6),
)
def test_duration_is_the_sum_of_its_components(
    sign: str, components: list[tuple[int, str | None, str]]
) -> None:
    text = sign
    expected_ns = 0
    for whole, fraction, unit in components:
        number = str(whole) if fraction is None else f"{whole}.{fraction}"
        text += number + unit
        # each component is truncated to whole nanoseconds on its own, as Go does
        expected_ns += int(Fraction(number) * _UNITS[unit])
    assume(expected_ns <= 2**63 - 1)
    expected = -expected_ns if sign == "-" else expected_ns
    # int / int is correctly rounded, so the two sides are the same float exactly
    assert parse_duration(text) == expected / 10**9


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_nanosecond_numbers_round_trip(ns: int) -> None:
    assert parse_duration(ns) == ns / 10**9
    assert parse_duration(f"{ns}ns") == ns / 10**9


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (4096, 4096),
        (4096.0, 4096),
        ("512", 512),
        ("512B", 512),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("64kib", 65536),
        ("1MB", 1_000_000),
        ("1MiB", 1_048_576),
        ("1 MiB", 1_048_576),
        ("1.5MiB", 1_572_864),
        (".5KiB", 512),
        ("2GB", 2_000_000_000),
        ("2GiB", 2 * 1024**3),
        ("1TiB", 1024**4),
        ("1tb", 1000**4),
    ],
)
def test_sizes(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("1M", "unknown unit 'M'"),
        ("1 megabyte", "unknown unit 'megabyte'"),
        ("lots", "got 'lots'"),
        ("-1KiB", "got '-1KiB'"),
        (-1, "negative"),
        (True, "got True"),
        (1.5, "got 1.5"),
        ([1], "got [1]"),
        ("", "got ''"),
    ],
)
def test_not_sizes(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match="expected a size in bytes like 1048576") as info:
        parse_size(value)
    assert fragment in str(info.value)


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["B", "KB", "KiB", "MB", "MiB", "GB", "GiB"]),
)
def test_size_is_number_times_unit(number: int, unit: str) -> None:
    factor = {"B": 1, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20}
    factor |= {"GB": 10**9, "GiB": 2**30}
    assert parse_size(f"{number}{unit}") == number * factor[unit]
    assert parse_size(f"{number} {unit.lower()}") == number * factor[unit]
