"""Durations as admins write them: ``30s``, ``5m``, ``2h``, ``3d`` (or ``off``)."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"([0-9]+)\s*([smhdw])", re.IGNORECASE)


def parse_duration(text: str, *, allow_off: bool = True) -> int | None:
    """Seconds, or None for ``off``; ValueError with the accepted forms otherwise.

    ``1d12h`` and a bare number of seconds (``90``) are accepted too."""
    value = (text or "").strip().lower()
    if allow_off and value in ("off", "never", "none"):
        return None
    if re.fullmatch(r"[0-9]+", value):
        return int(value)
    compact = value.replace(" ", "")
    if compact and _PART.sub("", compact) == "":
        return sum(int(n) * _UNITS[u.lower()] for n, u in _PART.findall(compact))
    raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 2h, 3d{', or off' if allow_off else ''})")


def format_duration(seconds: int | None) -> str:
    """The shortest exact form: ``3d``, ``90m``, ``45s``; ``off`` for None."""
    if seconds is None:
        return "off"
    if seconds == 0:
        return "0s"
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"
