"""The MSRP trace file (``[server] trace_msrp``): every byte sent and received, for operators.

Off by default. Chat is text and is written as such; a large body (a file transfer) is cut
after ``max_bytes`` per write so the trace stays readable and the disk stays free.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO

__all__ = ["MsrpTracer"]


class MsrpTracer:
    def __init__(self, path: Path | None, *, max_bytes: int = 4096) -> None:
        self._file: TextIO | None = path.open("a", encoding="utf-8") if path else None
        self.max_bytes = max_bytes

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def trace(self, direction: str, peer: str, data: bytes) -> None:
        if self._file is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        arrow = "<-" if direction == "recv" else "->"
        text = data[: self.max_bytes].decode("utf-8", "replace")
        if len(data) > self.max_bytes:
            text += f"\n[... {len(data) - self.max_bytes} more bytes]"
        self._file.write(f"{stamp} msrp {direction} {arrow} {peer} ({len(data)} bytes)\n{text}\n\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
