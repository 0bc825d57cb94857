"""The embedded mixer's native media loop: per-packet work in C, Python the reference.

`_media` (control/media/native/_media.c, built by `pip install -e .` from setup.py) does what
the interpreter did once per datagram, where the profile (bench/RESULTS.md, issue 14) put
the time once the mix itself was vectorised:

* `recv_batch`: every leg's waiting datagrams in one call per tick (recvmmsg with the
  kernel's arrival times) instead of one event-loop wake-up and callback per packet;
* `send_batch`: the tick's datagrams in one call instead of a `transport.sendto` each;
* `parse_rtp` and `level_db`: `RtpPacket.parse` and `stream.level_db`, the same results;
* `JitterBuffer`: `control.media.jitter.JitterBuffer`, the same policy and the same
  floating-point steps, so the same frames, losses and concealments tick for tick;
* `SequenceTracker`: `control.media.rtp.SequenceTracker` (RFC 3550 A.1), run twice per
  packet (source filter, RTCP reception statistics);
* `mix_minus`: `MixRoom._mix_minus` with the G.711 table encode, below the limiter's knee;
* `table_decode`: the G.711 decode (`NativePcmu`/`NativePcma`, the streams' decoders):
  one C loop instead of numpy's frombuffer + fancy index, the same samples.

Which path runs is chosen once per mixer: `[rtp] native_media` in the config (default true:
the README's `make` commands always build the extension), overridden by the environment
variable `CHORUS_NATIVE_MEDIA` (``1``/``0``) so a whole test run can be put on either path.
A missing extension is never a silent fall-back to Python: the config is refused (or
`load` raises) unless the Python path was asked for.  The Python path stays complete and is
what the differential tests compare the native one against.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType

import numpy as np

from control.media.codecs import Codec, Pcm, PcmaCodec, PcmuCodec, alaw_decode, ulaw_decode
from control.media.jitter import Arrival, Frame, JitterStats, Lost
from control.media.rtp import RtpError, RtpPacket, SequenceUpdate
from control.media.stream import MediaKit

__all__ = [
    "ENV",
    "NativePcma",
    "NativePcmu",
    "NativeUnavailable",
    "available",
    "choose",
    "kit",
    "load",
]

ENV = "CHORUS_NATIVE_MEDIA"

_module: ModuleType | None = None
_import_error = ""
try:
    from control.media.native import _media
except ImportError as exc:  # not built: `pip install -e .` (make deps) builds it
    _import_error = str(exc)
else:
    _media.configure(RtpPacket, RtpError, Frame, Lost, Arrival, JitterStats, SequenceUpdate)
    _module = _media


class NativeUnavailable(RuntimeError):
    """The native path was asked for but the extension is not built."""


def available() -> bool:
    return _module is not None


def load() -> ModuleType:
    """The extension module, or NativeUnavailable saying how to build it."""
    if _module is None:
        raise NativeUnavailable(
            f"native media path asked for ({ENV} or [rtp] native_media) but "
            f"control.media.native._media is not built ({_import_error}); run make deps "
            "(pip install -e .) with gcc and python3-dev installed"
        )
    return _module


# The G.711 decode tables (256 int16 samples each), read from the Python codecs themselves.
_ULAW_TABLE = ulaw_decode(bytes(range(256)))
_ALAW_TABLE = alaw_decode(bytes(range(256)))


class NativePcmu(PcmuCodec):
    """PCMU whose decode is the C table lookup; encode, PLC and state are PcmuCodec's."""

    def _decode(self, payload: bytes) -> Pcm:
        return np.frombuffer(load().table_decode(payload, _ULAW_TABLE), dtype=np.int16)


class NativePcma(PcmaCodec):
    """PCMA whose decode is the C table lookup; encode, PLC and state are PcmaCodec's."""

    def _decode(self, payload: bytes) -> Pcm:
        return np.frombuffer(load().table_decode(payload, _ALAW_TABLE), dtype=np.int16)


_NATIVE_DECODERS: dict[type[Codec], type[Codec]] = {PcmuCodec: NativePcmu, PcmaCodec: NativePcma}


def decoder(factory: Callable[[], Codec]) -> Codec:
    """A stream's decoder: the codec's own, or its native subclass for G.711."""
    codec = factory()
    native = _NATIVE_DECODERS.get(type(codec))
    return native() if native is not None else codec


def kit() -> MediaKit:
    """The native per-packet pieces for `ParticipantStream(kit=...)`."""
    media = load()
    return MediaKit(
        parse=media.parse_rtp,
        jitter_buffer=media.JitterBuffer,
        tracker=media.SequenceTracker,
        decoder=decoder,
    )


def choose(setting: bool) -> bool:
    """The path to run: the environment's ``CHORUS_NATIVE_MEDIA`` if set, else `setting`."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return setting
