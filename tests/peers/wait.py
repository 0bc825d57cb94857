"""Wait for a condition, not for a time: the polling helper integration tests use.

A fixed ``asyncio.sleep`` before an assertion is a guess at how long the far side takes, and
on a loaded two-core machine the guess is sometimes wrong. ``wait_until`` polls the condition
and returns as soon as it holds, with a generous deadline only as a backstop; the test then
asserts what it means to, so a deadline that passes shows up as that assertion failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["wait_until"]


async def wait_until(
    condition: Callable[[], object], *, timeout: float = 15.0, interval: float = 0.02
) -> bool:
    """Poll ``condition`` until it is truthy (True) or ``timeout`` seconds pass (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() >= deadline:
            return bool(condition())
        await asyncio.sleep(interval)
    return True
