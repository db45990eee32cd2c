"""Go durations and byte sizes, as they appear in a registry-style YAML configuration.

The registry reads its durations with Go's ``time.ParseDuration`` (through ``yaml.v2``), so
``500ms``, ``1m30s``, ``1.5h``, ``300us``/``300µs`` and ``10ns`` are all valid, and a YAML number
(``timeout: 500``) is a count of *nanoseconds*, not seconds. :func:`parse_duration` accepts exactly
what Go accepts, plus a string of digits (what ``${VAR}`` interpolation yields for a number), and
returns seconds as a float, which is what asyncio and tenacity want.

Byte sizes (:func:`parse_size`) are an rxsinks addition: a plain integer is bytes; a suffix is
decimal (``KB``, ``MB``, ``GB``, ``TB``: powers of 1000) or binary (``KiB``, ``MiB``, ``GiB``,
``TiB``: powers of 1024), case-insensitive. Bare ``K``/``M``/``G`` are refused on purpose: they
are ambiguous between the two.
"""

from __future__ import annotations

import datetime
import math
import re

__all__ = ["parse_duration", "parse_size"]

_NS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # MICRO SIGN, what Go's own String() prints
    "\u03bcs": 1_000,  # GREEK SMALL LETTER MU, also accepted by Go
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# time.Duration is an int64 count of nanoseconds; Go refuses anything beyond it
_MAX_NS = 2**63 - 1
_DIGITS = "0123456789"
_BARE_INT = re.compile(r"[0-9]+")

_BYTES_PER_UNIT = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)")


def _duration_error(value: object, reason: str = "") -> ValueError:
    detail = f" ({reason})" if reason else ""
    return ValueError(f"expected a Go duration like 500ms or 1s, got {value!r}{detail}")


def _go_duration_ns(text: str) -> int:
    """Parse Go duration syntax into integer nanoseconds, exactly like ``time.ParseDuration``.

    Raises:
        ValueError: the text is not a Go duration; the message says why.
    """
    s = text
    negative = False
    if s[:1] in ("+", "-"):
        negative = s[0] == "-"
        s = s[1:]
    if _BARE_INT.fullmatch(s):
        # Go accepts only "0" without a unit; any digit string is accepted here because that is
        # what ${VAR} interpolation produces for a YAML number, which Go reads as nanoseconds
        total = int(s)
    else:
        if not s:
            raise _duration_error(text, "empty")
        total = 0
        i, n = 0, len(s)
        while i < n:
            j = i
            while j < n and s[j] in _DIGITS:
                j += 1
            whole = s[i:j]
            fraction = ""
            if j < n and s[j] == ".":
                k = j + 1
                while k < n and s[k] in _DIGITS:
                    k += 1
                fraction = s[j + 1 : k]
                j = k
            if not whole and not fraction:
                raise _duration_error(text, f"{s[i:]!r} does not start with a number")
            k = j
            while k < n and s[k] not in _DIGITS and s[k] != ".":
                k += 1
            unit = s[j:k]
            if not unit:
                raise _duration_error(text, "missing unit; use ns, us, ms, s, m or h")
            per_unit = _NS_PER_UNIT.get(unit)
            if per_unit is None:
                raise _duration_error(text, f"unknown unit {unit!r}; use ns, us, ms, s, m or h")
            total += int(whole or "0") * per_unit
            if fraction:
                # exact integer arithmetic, truncated like Go's conversion to int64 nanoseconds
                total += int(fraction) * per_unit // 10 ** len(fraction)
            i = k
    if total > _MAX_NS + (1 if negative else 0):
        raise _duration_error(text, "out of range: at most about 292 years")
    return -total if negative else total


def parse_duration(value: object) -> float:
    """Read a Go duration and return it in seconds.

    Accepts what the registry accepts: a Go duration string (``"500ms"``, ``"1m30s"``,
    ``"1.5h"``, ``"300us"``, ``"300µs"``, ``"10ns"``, ``"-1s"``), or a number, which Go reads as
    nanoseconds (a float is truncated to whole nanoseconds, as ``yaml.v2`` does). A string of
    digits also counts as nanoseconds, and a :class:`datetime.timedelta` is taken as it is.
    Negative durations are returned as they are: whether they are allowed is the caller's
    business (the registry treats ``timeout <= 0`` as "use the default").

    Args:
        value: the configured value.

    Returns:
        The duration in seconds.

    Raises:
        ValueError: the value is not a duration; the message says what was expected and why.

    Example:
        >>> parse_duration("1m30s"), parse_duration("500ms"), parse_duration(1_500_000_000)
        (90.0, 0.5, 1.5)
    """
    if isinstance(value, bool):
        raise _duration_error(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, int):
        ns = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _duration_error(value)
        ns = int(value)
    elif isinstance(value, str):
        ns = _go_duration_ns(value.strip())
    else:
        raise _duration_error(value, f"a {type(value).__name__} is not a duration")
    if not -_MAX_NS - 1 <= ns <= _MAX_NS:
        raise _duration_error(value, "out of range: at most about 292 years")
    return ns / 1_000_000_000


def parse_size(value: object) -> int:
    """Read a byte size.

    Args:
        value: an integer number of bytes, or a string such as ``"512"``, ``"64KiB"``,
            ``"1.5 MB"`` or ``"1GiB"`` (units ``B``, ``KB``, ``KiB``, ``MB``, ``MiB``, ``GB``,
            ``GiB``, ``TB``, ``TiB``, case-insensitive; fractions are rounded down to whole bytes).

    Returns:
        The size in bytes (>= 0).

    Raises:
        ValueError: not a size, or negative; the message says what was expected.

    Example:
        >>> parse_size("1MiB"), parse_size("1MB"), parse_size(4096)
        (1048576, 1000000, 4096)
    """
    expected = "expected a size in bytes like 1048576, 64KiB or 1MiB"
    if isinstance(value, bool):
        raise ValueError(f"{expected}, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{expected}, got {value!r} (negative)")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {value!r}")
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{expected}, got {value!r}")
    number, unit = match.groups()
    per_unit = _BYTES_PER_UNIT.get(unit.lower())
    if per_unit is None:
        raise ValueError(
            f"{expected}, got {value!r} (unknown unit {unit!r}; use B, KB, KiB, MB, MiB, GB, "
            "GiB, TB or TiB)"
        )
    whole, _, fraction = number.partition(".")
    size = int(whole or "0") * per_unit
    if fraction:
        size += int(fraction) * per_unit // 10 ** len(fraction)
    return size
