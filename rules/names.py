"""People's names as customers expect to read them."""

from __future__ import annotations

import re

_TITLES = {"mr", "mrs", "ms", "miss", "dr", "prof", "sir", "herr", "frau", "m", "mme", "sr", "sra"}


def first_name(display_name: str) -> str:
    """``John Smith`` → ``John``; ``Smith, John`` → ``John``; ``Dr. José Núñez`` → ``José``.

    Returns "" when the display name gives no usable name (empty, an address,
    or digits), so the greeting falls back to a plain "Hello,".
    """
    name = " ".join((display_name or "").replace('"', " ").split())
    if not name or "@" in name:
        return ""
    if "," in name:
        last, _, rest = name.partition(",")
        name = rest.strip() or last.strip()
    words = [w for w in name.split() if w.rstrip(".").lower() not in _TITLES]
    if not words:
        return ""
    first = words[0].strip(".,;:()[]'")
    if not first or not re.search(r"[^\W\d_]", first):
        return ""
    if first.isupper() and len(first) > 1:
        first = first.capitalize()
    return first


def greeting(display_name: str) -> str:
    name = first_name(display_name)
    return f"Hello {name}," if name else "Hello,"
