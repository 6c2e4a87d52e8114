"""Which of a message's files travel with the mail about it (issue 10, section 4).

Pure: sizes in, a plan out. Every file is stored whatever its size; a file
that does not travel is listed in the CSR's notification with the reason,
and ``casegate case file ID`` fetches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FileFate:
    forward: bool
    reason: str = ""  # why not, for the CSR


def size_text(size: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, as mail clients show sizes)."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def parse_size(value: object) -> int:
    """``5000000``, ``"5MB"``, ``"500k"``, ``"1G"`` -> bytes; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value}")
        return value
    text = str(value).strip().lower().removesuffix("b").strip()
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:], 1) if text else 1
    number = text[:-1] if scale != 1 else text
    try:
        size = float(number)
    except ValueError:
        raise ValueError(f"not a size: {value!r} (e.g. 5000000, 500k, 5MB, 1G)") from None
    if size < 0:
        raise ValueError(f"a size cannot be negative: {value!r}")
    return int(size * scale)


def plan(parts: Sequence[tuple[str, int]], *, message_max: int, case_used: int,
         case_max: int) -> list[FileFate]:
    """For each (sha256, size) of a message's files, in order: does it travel?

    Each content once; together at most ``message_max`` bytes; and the case's
    files already forwarded (``case_used``) plus these at most ``case_max``."""
    seen: set[str] = set()
    budget = message_max
    case_left = case_max - case_used
    fates: list[FileFate] = []
    for sha, size in parts:
        if sha in seen:
            fates.append(FileFate(False, "the same content is attached already"))
            continue
        if size > message_max:
            fates.append(FileFate(False, f"too large to forward ({size_text(size)}; the limit is "
                                         f"{size_text(message_max)} per message)"))
        elif size > budget:
            fates.append(FileFate(False, f"not forwarded: this message's files are over "
                                         f"{size_text(message_max)} together"))
        elif size > case_left:
            fates.append(FileFate(False, f"not forwarded: the case's files are over "
                                         f"{size_text(case_max)} together"))
        else:
            seen.add(sha)
            budget -= size
            case_left -= size
            fates.append(FileFate(True))
    return fates
