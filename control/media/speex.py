"""A small ctypes binding over Debian's libspeex1 (Speex narrowband and wideband).

Why ctypes: no maintained Speex wheel exists on PyPI, and libspeex1 is a plain C library
already packaged by Debian.  Only what RTP audio needs is bound: one encoder or decoder
per stream, 20 ms frames, integer PCM, and the decoder's own loss concealment
(`speex_decode_int` with no bits).

SpeexBits is treated as an opaque, generously sized, zeroed buffer: on x86-64 the
struct is 48 octets (char*, six ints, a reserved int and a void*), we give it 256 so
a different ABI can never make libspeex write past it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "SPEEX_MODEID_NB",
    "SPEEX_MODEID_WB",
    "SpeexDecoder",
    "SpeexEncoder",
    "SpeexError",
    "require_speex",
    "speex_available",
]

# speex/speex.h request numbers for speex_encoder_ctl / speex_decoder_ctl.
SPEEX_SET_ENH = 0
SPEEX_GET_FRAME_SIZE = 3
SPEEX_SET_QUALITY = 4
SPEEX_SET_COMPLEXITY = 16
SPEEX_GET_COMPLEXITY = 17
SPEEX_MODEID_NB = 0
SPEEX_MODEID_WB = 1

_BITS_SIZE = 256
_MAX_PACKET = 2048  # far above any single-frame Speex payload (UWB q10 is ~106 octets)
_MAX_FRAMES = 8  # frames decoded from one RTP payload (RFC 5574 allows several)


log = logging.getLogger("chorus.media.speex")


def _release(coder: SpeexEncoder | SpeexDecoder) -> None:
    """Free a coder's native state from ``__del__``, where nothing may raise: a failure
    (a library torn down at interpreter exit, a bug in close) is logged, not lost."""
    try:
        coder.close()
    except Exception:
        log.warning("releasing %s failed", type(coder).__name__, exc_info=True)


class SpeexError(ValueError):
    """libspeex is missing or a payload could not be decoded."""


_lib: Any = None
_lib_lock = threading.Lock()


def _load() -> Any:
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        name = ctypes.util.find_library("speex") or "libspeex.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise SpeexError(f"libspeex not available: {exc}") from exc
        vp, ip = ctypes.c_void_p, ctypes.c_int
        lib.speex_lib_get_mode.restype = vp
        lib.speex_lib_get_mode.argtypes = [ip]
        for fn in ("speex_encoder_init", "speex_decoder_init"):
            getattr(lib, fn).restype = vp
            getattr(lib, fn).argtypes = [vp]
        for fn in ("speex_encoder_destroy", "speex_decoder_destroy"):
            getattr(lib, fn).restype = None
            getattr(lib, fn).argtypes = [vp]
        for fn in ("speex_encoder_ctl", "speex_decoder_ctl"):
            getattr(lib, fn).restype = ip
            getattr(lib, fn).argtypes = [vp, ip, vp]
        for fn in ("speex_bits_init", "speex_bits_reset", "speex_bits_destroy"):
            getattr(lib, fn).restype = None
            getattr(lib, fn).argtypes = [vp]
        lib.speex_bits_read_from.restype = None
        lib.speex_bits_read_from.argtypes = [vp, ctypes.c_char_p, ip]
        lib.speex_bits_write.restype = ip
        lib.speex_bits_write.argtypes = [vp, ctypes.c_char_p, ip]
        lib.speex_bits_peek_unsigned.restype = ctypes.c_uint
        lib.speex_bits_peek_unsigned.argtypes = [vp, ip]
        lib.speex_bits_remaining.restype = ip
        lib.speex_bits_remaining.argtypes = [vp]
        # PCM goes by address (`ndarray.ctypes.data`): numpy's `data_as` ties every pointer it
        # makes into a reference cycle, garbage only the cyclic collector frees (issue 14).
        lib.speex_encode_int.restype = ip
        lib.speex_encode_int.argtypes = [vp, vp, vp]
        lib.speex_decode_int.restype = ip
        lib.speex_decode_int.argtypes = [vp, vp, vp]
        _lib = lib
        return lib


def require_speex() -> None:
    """Raise SpeexError now if libspeex cannot be loaded (codecs create states lazily)."""
    _load()


def speex_available() -> bool:
    try:
        _load()
    except SpeexError:
        return False
    return True


def _ctl_int(fn: Any, state: int, request: int, value: int = 0) -> int:
    arg = ctypes.c_int(value)
    if fn(state, request, ctypes.byref(arg)) != 0:
        raise SpeexError(f"speex ctl {request} refused")
    return arg.value


class _Bits:
    """An owned SpeexBits: init once, reset per frame, destroyed with its owner."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self.buf = ctypes.create_string_buffer(_BITS_SIZE)
        # Its address, not a cast (a cast would tie buf into a reference cycle): self.buf
        # keeps the memory alive, and a closed stream's state goes when its codec does.
        self.ptr = ctypes.c_void_p(ctypes.addressof(self.buf))
        lib.speex_bits_init(self.ptr)
        self._alive = True

    def destroy(self) -> None:
        if self._alive:
            self._alive = False
            self._lib.speex_bits_destroy(self.ptr)


class SpeexEncoder:
    """One Speex encoder (one stream).  `mode` is SPEEX_MODEID_NB or SPEEX_MODEID_WB."""

    def __init__(self, mode: int, *, quality: int = 8, complexity: int = 3) -> None:
        lib = _load()
        self._lib = lib
        mode_ptr = lib.speex_lib_get_mode(mode)
        if not mode_ptr:
            raise SpeexError(f"unknown speex mode {mode}")
        self._state: int | None = lib.speex_encoder_init(mode_ptr)
        if not self._state:
            raise SpeexError("speex_encoder_init failed")
        self._bits = _Bits(lib)
        _ctl_int(lib.speex_encoder_ctl, self._state, SPEEX_SET_QUALITY, quality)
        _ctl_int(lib.speex_encoder_ctl, self._state, SPEEX_SET_COMPLEXITY, complexity)
        self.frame_size = _ctl_int(lib.speex_encoder_ctl, self._state, SPEEX_GET_FRAME_SIZE)
        self._out = ctypes.create_string_buffer(_MAX_PACKET)

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """Encode a whole number of frames (160 samples NB, 320 WB) into one payload."""
        if self._state is None:
            raise SpeexError("encoder closed")
        samples = np.ascontiguousarray(pcm, dtype=np.int16)
        if samples.size == 0 or samples.size % self.frame_size:
            raise SpeexError(f"need a multiple of {self.frame_size} samples, got {samples.size}")
        lib = self._lib
        lib.speex_bits_reset(self._bits.ptr)
        for start in range(0, samples.size, self.frame_size):
            # speex_encode_int scales its input in place: give it a private copy.
            frame = np.array(samples[start : start + self.frame_size], dtype=np.int16)
            lib.speex_encode_int(self._state, frame.ctypes.data, self._bits.ptr)
        n = lib.speex_bits_write(self._bits.ptr, self._out, _MAX_PACKET)
        return self._out.raw[:n]

    def close(self) -> None:
        if getattr(self, "_state", None) is not None:  # None too when __init__ failed early
            self._lib.speex_encoder_destroy(self._state)
            self._state = None
            self._bits.destroy()

    def __del__(self) -> None:
        _release(self)


class SpeexDecoder:
    """One Speex decoder (one stream), with perceptual enhancement on."""

    def __init__(self, mode: int, *, enhance: bool = True) -> None:
        lib = _load()
        self._lib = lib
        mode_ptr = lib.speex_lib_get_mode(mode)
        if not mode_ptr:
            raise SpeexError(f"unknown speex mode {mode}")
        self._state: int | None = lib.speex_decoder_init(mode_ptr)
        if not self._state:
            raise SpeexError("speex_decoder_init failed")
        self._bits = _Bits(lib)
        _ctl_int(lib.speex_decoder_ctl, self._state, SPEEX_SET_ENH, int(enhance))
        self.frame_size = _ctl_int(lib.speex_decoder_ctl, self._state, SPEEX_GET_FRAME_SIZE)

    def decode(self, payload: bytes) -> npt.NDArray[np.int16]:
        """Decode every frame in one RTP payload (RFC 5574 §3.3: frames are concatenated).

        `speex_decode_int` returns 0 per good frame, -1 at the end of the stream and -2
        for a corrupt one; garbage that yields no frame raises `SpeexError` (the caller
        conceals instead), garbage after good frames is ignored.
        """
        if self._state is None:
            raise SpeexError("decoder closed")
        if not payload:
            raise SpeexError("empty speex payload")
        if len(payload) > _MAX_PACKET:
            raise SpeexError("speex payload too large")
        # The first frame must start with a narrowband layer: wideband bit 0, then a
        # 4-bit mode 0..8.  Checking it here keeps most garbage away from libspeex, whose
        # corrupt-stream notifications go straight to stderr.
        if payload[0] & 0x80 or (payload[0] >> 3) & 0x0F > 8:
            raise SpeexError("speex payload does not start with a narrowband frame")
        lib = self._lib
        lib.speex_bits_read_from(self._bits.ptr, payload, len(payload))
        frames: list[npt.NDArray[np.int16]] = []
        while len(frames) < _MAX_FRAMES:
            if frames and lib.speex_bits_peek_unsigned(self._bits.ptr, 5) > 8:
                break  # not a narrowband frame header: terminator, padding or garbage
            out = np.zeros(self.frame_size, dtype=np.int16)
            rc = lib.speex_decode_int(self._state, self._bits.ptr, out.ctypes.data)
            if rc != 0:
                break
            frames.append(out)
            # Fewer than 5 bits left is the padding of the last octet (RFC 5574 §3.3).
            if lib.speex_bits_remaining(self._bits.ptr) < 5:
                break
        if not frames:
            raise SpeexError("undecodable speex payload")
        return np.concatenate(frames)

    def conceal(self) -> npt.NDArray[np.int16]:
        """One frame of Speex's own packet-loss concealment (decode with no bits)."""
        if self._state is None:
            raise SpeexError("decoder closed")
        out = np.zeros(self.frame_size, dtype=np.int16)
        self._lib.speex_decode_int(self._state, None, out.ctypes.data)
        return out

    def close(self) -> None:
        if getattr(self, "_state", None) is not None:  # None too when __init__ failed early
            self._lib.speex_decoder_destroy(self._state)
            self._state = None
            self._bits.destroy()

    def __del__(self) -> None:
        _release(self)
