"""Bounded waits for tests: poll a condition until it holds or a generous timeout passes, then fail saying what
was awaited. Only a bound, never a timing assertion."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout: float, what: str = "condition", every: float = 0.02,
               detail: Callable[[], str] | None = None) -> T:
    """Poll `pred` every `every` s and return its first true value; after `timeout` s an AssertionError names
    `what`, followed by `detail()` (a log tail, say) when given."""
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"{what} not within {timeout} s" + (f"\n{detail()}" if detail else ""))
        time.sleep(every)
