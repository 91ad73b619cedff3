"""Durations and sizes as people write them in stack files and options."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_DURATION_FACTORS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|k|m|g|t)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2,
    "g": 1024**3, "gb": 1024**3, "t": 1024**4, "tb": 1024**4,
}


def parse_duration(text: str) -> float:
    """'90s', '30m', '20h', '7d', '2w' -> seconds. Raises ValueError with the accepted forms."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration; write a number and a unit, e.g. 90s, 30m, 20h, 7d")
    return float(m.group(1)) * _DURATION_FACTORS[m.group(2).lower()]


def format_duration(seconds: float) -> str:
    """Seconds -> a short human string: 0.4s, 12.3s, 4m05s, 3h02m, 2d04h."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 3 * 86400:  # 26h reads better than 1d02h next to a 26h target
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def human_duration(seconds: float, *, precision: int = 0) -> str:
    """A duration for people and for copying: `26h00m (93600 s)`; below a minute just `12.3s`.
    The one way durations are shown (messages, tables, reports)."""
    if seconds < 60:
        return format_duration(seconds)
    return f"{format_duration(seconds)} ({seconds:.{precision}f} s)"


def parse_size(text: str | int) -> int:
    """'256mb', '1gb', '512' (bytes) -> bytes. Units are binary (1kb = 1024 bytes), as Redis reads them."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a size; write a number and a unit, e.g. 256mb, 1gb")
    return int(float(m.group(1)) * _SIZE_FACTORS[(m.group(2) or "b").lower()])


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def go_duration_seconds(text: str) -> float:
    """Go's time.ParseDuration for the units these settings use (h, m, s, ms)."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", text or "")
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a Go duration (e.g. 60s, 5m, 24h)")
    mult = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * mult[u] for n, u in parts)
