# Stub for the C extension control/media/native/_media.c (see that file and __init__.py).
from collections.abc import Sequence
from typing import Any

from control.media import jitter, rtp
from control.media.rtp import RtpPacket

def configure(
    packet_type: type,
    error_type: type,
    frame_type: type,
    lost_type: type,
    arrival_type: type,
    stats_type: type,
    update_type: type,
    /,
) -> None: ...
def enable_timestamps(fd: Any, /) -> None: ...
def recv_batch(
    fds: Sequence[int], max_per_fd: int, /
) -> tuple[list[tuple[int, bytes, tuple[str, int], float]], list[tuple[int, int]]]: ...
def send_batch(items: Sequence[tuple[int, bytes, str, int]], /) -> list[tuple[int, int]]: ...
def parse_rtp(data: bytes, /) -> RtpPacket: ...
def level_db(frame: Any, /) -> float: ...
def mix_minus(
    frames: Sequence[Any], size: int, tables: Sequence[Any], /
) -> tuple[bytearray, bytearray | None, list[bytes | None] | None]: ...

# Typed as the Python class it reproduces (the same interface; not a subclass at run time).
class JitterBuffer(jitter.JitterBuffer): ...
class SequenceTracker(rtp.SequenceTracker): ...
