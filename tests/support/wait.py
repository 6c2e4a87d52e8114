"""Waiting for a condition in a system test."""

from __future__ import annotations

import time
from collections.abc import Callable


def until(what: str, predicate: Callable[[], object], timeout: float = 60.0, interval: float = 0.2) -> None:
    """Poll ``predicate`` until it holds; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached after {timeout}s")
        time.sleep(interval)
