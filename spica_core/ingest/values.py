"""Header values to column values: the kinds a header map names, each with its checks.

Every function takes the value astropy parsed from the card and returns the column's value,
or raises :class:`BadValue` with a reason an operator can act on. The sexagesimal and date
readers are written here (a regular expression each) rather than through astropy.coordinates
and astropy.time, which are two orders of magnitude slower per value; the tests check them
against those libraries.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from spica_core.ingest.header_map import Source


class BadValue(ValueError):
    """A header value that cannot fill its column; the message says why."""


_SEXAGESIMAL = re.compile(
    r"^\s*(?P<sign>[+-]?)\s*(?P<a>\d{1,3})[:\s](?P<b>\d{1,2})[:\s](?P<c>\d{1,2}(?:\.\d*)?)\s*$"
)
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2}(?:\.\d*)?))?$")
_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2}(?:\.\d*)?)$")


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadValue(f"expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise BadValue(f"expected a finite number, got {value!r}")
    return number


def _in_range(number: float, source: Source) -> float:
    if source.min is not None and number < source.min:
        raise BadValue(f"{number:g} is below {source.min:g}")
    if source.max is not None and number > source.max:
        raise BadValue(f"{number:g} is above {source.max:g}")
    return number


def sexagesimal(value: object, *, hours: bool) -> float:
    """``hh:mm:ss.s`` (hours, to degrees) or ``[+-]dd:mm:ss.s`` (degrees)."""
    if not isinstance(value, str):
        raise BadValue(f"expected a sexagesimal string, got {value!r}")
    m = _SEXAGESIMAL.match(value)
    if m is None:
        form = "hh:mm:ss.s" if hours else "+dd:mm:ss.s"
        raise BadValue(f"{value!r} is not sexagesimal ({form})")
    a, b, c = int(m["a"]), int(m["b"]), float(m["c"])
    if b >= 60 or c >= 60:
        raise BadValue(f"{value!r}: minutes and seconds must be below 60")
    if hours and (m["sign"] or a >= 24):
        raise BadValue(f"{value!r}: right ascension must be 0 to 24 h")
    if not hours and a > 90:
        raise BadValue(f"{value!r}: declination must be -90 to +90 deg")
    magnitude = (a + b / 60.0 + c / 3600.0) * (15.0 if hours else 1.0)
    if not hours and magnitude > 90.0:
        raise BadValue(f"{value!r}: declination must be -90 to +90 deg")
    return -magnitude if m["sign"] == "-" else magnitude


def text(value: object, source: Source) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadValue(f"expected a non-empty string, got {value!r}")
    value = value.strip()
    if source.choices is not None and value not in source.choices:
        raise BadValue(f"{value!r} is not one of {', '.join(source.choices)}")
    if source.pattern is not None and not re.search(source.pattern, value):
        raise BadValue(f"{value!r} does not match {source.pattern}")
    return value


def date_time(date: object, time: object | None) -> datetime:
    """A UTC time from ``DATE-OBS`` (``YYYY-MM-DD[Thh:mm:ss.s]``) and, for a date alone,
    the time of day in ``time`` (``hh:mm:ss.s``; None: midnight)."""
    if not isinstance(date, str) or (m := _DATE.match(date.strip())) is None:
        raise BadValue(f"{date!r} is not a date (YYYY-MM-DD or YYYY-MM-DDThh:mm:ss)")
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    clock: tuple[str, str, str] | None = (m[4], m[5], m[6]) if m[4] else None
    if clock is None and time is not None:
        if not isinstance(time, str) or (t := _TIME.match(time.strip())) is None:
            raise BadValue(f"time of day {time!r} is not hh:mm:ss.s")
        clock = (t[1], t[2], t[3])
    hour, minute, second = (int(clock[0]), int(clock[1]), float(clock[2])) if clock else (0, 0, 0.0)
    try:
        whole = int(second)
        start = datetime(year, month, day, hour, minute, whole, tzinfo=UTC)
        return start + timedelta(microseconds=round((second - whole) * 1e6))
    except ValueError as exc:
        raise BadValue(f"{date!r} {time or ''}: {exc}".replace(" :", ":")) from None


def convert(value: object, source: Source) -> float | str:
    """``value`` read as ``source`` says (dates are read by :func:`date_time`)."""
    if source.kind == "text":
        return text(value, source)
    if source.kind in ("number", "degrees"):
        return _in_range(_number(value), source)
    if source.kind == "hours_sexagesimal":
        return sexagesimal(value, hours=True)
    if source.kind == "degrees_sexagesimal":
        return sexagesimal(value, hours=False)
    raise AssertionError(f"kind {source.kind} has its own reader")
