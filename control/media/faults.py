"""Rate-limited error logging for the media path.

The mixer runs 50 ticks a second for every room: an error that repeats each tick (a broken
encoder, an SRTP context that refuses to protect) must be reported once with its context and
traceback, then summarised, or it floods the log and costs more CPU than the mixing.  Each
distinct fault (a key such as ``("encode", room, participant)``) is logged the first time it
happens, then at most once per ``interval`` with the count of repeats in between.

Sans-IO in the sense that matters: the caller passes ``now``, so tests see every line.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["FaultLog"]


@dataclass(slots=True)
class _Seen:
    last_logged: float
    suppressed: int = 0


class FaultLog:
    """``report()`` an exception with its context; repeats are counted, not logged each time."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 10.0,  # a repeating fault is summarised this often
        max_keys: int = 4096,  # bounded memory when many participants fail at once
    ) -> None:
        self._log = logger
        self._interval = interval
        self._max_keys = max_keys
        self._seen: dict[Hashable, _Seen] = {}
        self.reported = 0  # faults passed to report(), logged or not

    def report(self, key: Hashable, context: str, exc: BaseException, now: float) -> bool:
        """Log ``context: exc`` unless this key was logged within the interval; True if logged."""
        self.reported += 1
        seen = self._seen.get(key)
        if seen is None:
            if len(self._seen) >= self._max_keys:
                self._seen.clear()  # forget old faults rather than grow without bound
            self._seen[key] = _Seen(now)
            self._log.error("%s: %r", context, exc, exc_info=exc)
            return True
        if now - seen.last_logged < self._interval:
            seen.suppressed += 1
            return False
        self._log.error(
            "%s: %r (again; %d more since %.0f s ago)",
            context,
            exc,
            seen.suppressed,
            now - seen.last_logged,
        )
        seen.last_logged = now
        seen.suppressed = 0
        return True

    def forget(self, key: Hashable) -> None:
        """A fault that has cleared (the stream recovered or left): log it afresh next time."""
        self._seen.pop(key, None)
