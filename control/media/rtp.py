"""RTP packets (RFC 3550 §5), sequence bookkeeping (RFC 3550 Appendix A.1) and a sender.

Everything here is sans-IO: bytes in, packets out, no clock and no `random` of its own.
The packet model is immutable so a packet can be handed to the jitter buffer, the mixer
and the SRTP layer without anyone changing it under the others' feet.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

__all__ = [
    "RTP_VERSION",
    "RtpError",
    "RtpPacket",
    "RtpSender",
    "SequenceTracker",
    "SequenceUpdate",
    "is_rtcp",
    "seq_delta",
    "ts_delta",
]

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32


class RtpError(ValueError):
    """A datagram that is not a valid RTP packet (RFC 3550 §5.1, §A.1 validity checks)."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet, RFC 3550 §5.1.

    `padding` is the number of padding octets (including the final count octet) carried
    after the payload: 0 means the P bit is clear.  `extension_profile` is None when the
    X bit is clear; otherwise it and `extension` (a multiple of 4 octets) form the
    header extension of §5.3.1.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""
    padding: int = 0
    version: int = field(default=RTP_VERSION)

    @property
    def has_extension(self) -> bool:
        return self.extension_profile is not None

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP datagram; raise `RtpError` for anything that is not valid RTP."""
        if len(data) < _HEADER.size:
            raise RtpError(f"RTP packet too short ({len(data)} octets)")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        version = b0 >> 6
        if version != RTP_VERSION:
            raise RtpError(f"RTP version {version} is not 2")
        has_padding = bool(b0 & 0x20)
        has_extension = bool(b0 & 0x10)
        cc = b0 & 0x0F
        marker = bool(b1 & 0x80)
        pt = b1 & 0x7F
        pos = _HEADER.size
        end = len(data)
        if has_padding:
            # RFC 3550 §5.1: the last octet counts the padding octets, itself included.
            pad = data[-1]
            if pad == 0:
                raise RtpError("RTP padding count of zero")
            end -= pad
        else:
            pad = 0
        if pos + 4 * cc > end:
            raise RtpError("RTP CSRC list runs past the packet")
        csrcs = struct.unpack_from(f"!{cc}I", data, pos) if cc else ()
        pos += 4 * cc
        profile: int | None = None
        ext = b""
        if has_extension:
            if pos + 4 > end:
                raise RtpError("RTP header extension header runs past the packet")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if pos + 4 * words > end:
                raise RtpError("RTP header extension runs past the packet")
            ext = bytes(data[pos : pos + 4 * words])
            pos += 4 * words
        if pos > end:
            raise RtpError("RTP padding overlaps the header")
        return cls(
            payload_type=pt,
            sequence=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=marker,
            csrcs=tuple(csrcs),
            extension_profile=profile,
            extension=ext,
            padding=pad,
        )

    def serialize(self) -> bytes:
        """The wire form; our own misuse (bad field ranges) raises plain `ValueError`."""
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} out of range")
        if len(self.csrcs) > 15:
            raise ValueError("at most 15 CSRCs")
        if len(self.extension) % 4:
            raise ValueError("RTP header extension must be a multiple of 4 octets")
        if not 0 <= self.padding <= 255:
            raise ValueError("padding must be 0..255 octets")
        b0 = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding:
            b0 |= 0x20
        if self.extension_profile is not None:
            b0 |= 0x10
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [
            _HEADER.pack(
                b0, b1, self.sequence % SEQ_MOD, self.timestamp % TS_MOD, self.ssrc % TS_MOD
            )
        ]
        if self.csrcs:
            parts.append(struct.pack(f"!{len(self.csrcs)}I", *self.csrcs))
        if self.extension_profile is not None:
            parts.append(struct.pack("!HH", self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: on a muxed port, RTCP has a second octet (packet type) of 192..223.

    RTP payload types 64..95 are avoided precisely so that this test is unambiguous.
    """
    return len(data) >= 2 and data[0] >> 6 == RTP_VERSION and 192 <= data[1] <= 223


def seq_delta(a: int, b: int) -> int:
    """`a - b` for 16-bit sequence numbers, in -32768..32767 (handles wrap-around)."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= SEQ_MOD // 2 else d


def ts_delta(a: int, b: int) -> int:
    """`a - b` for 32-bit RTP timestamps, in -2**31..2**31-1 (handles wrap-around)."""
    d = (a - b) % TS_MOD
    return d - TS_MOD if d >= TS_MOD // 2 else d


@dataclass(frozen=True, slots=True)
class SequenceUpdate:
    """What `SequenceTracker.update` concluded about one packet.

    `valid` is RFC 3550 A.1's return value (the packet counts as received from a
    validated source); `new_source` says a different SSRC appeared and the tracker
    restarted for it; `resynced` says the same SSRC jumped and two sequential packets
    confirmed the jump (the sender restarted without a new SSRC).
    """

    valid: bool
    extended_seq: int | None
    new_source: bool = False
    resynced: bool = False


class SequenceTracker:
    """Extended sequence numbers for one received source, RFC 3550 Appendix A.1.

    A new source (first packet or SSRC change) is on probation until `min_sequential`
    packets arrive in sequence; 1 validates the first packet at once.
    """

    def __init__(
        self,
        *,
        min_sequential: int = 2,
        max_dropout: int = 3000,  # A.1: a jump this far ahead is not just loss
        max_misorder: int = 100,  # A.1: this far back is a reorder, beyond is a restart
    ) -> None:
        if min_sequential < 1:
            raise ValueError("min_sequential must be at least 1")
        self.min_sequential = min_sequential
        self.max_dropout = max_dropout
        self.max_misorder = max_misorder
        self.ssrc: int | None = None
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.probation = 0
        self._bad_seq = SEQ_MOD + 1

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self._bad_seq = SEQ_MOD + 1
        self.cycles = 0
        self.received = 0

    def _new_source(self, ssrc: int, seq: int) -> None:
        self.ssrc = ssrc
        self._init_seq(seq)
        self.max_seq = (seq - 1) % SEQ_MOD
        self.probation = self.min_sequential

    @property
    def extended_max(self) -> int:
        """Highest extended sequence number received (cycles + max_seq), RFC 3550 §6.4.1."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the base sequence, RFC 3550 A.3."""
        if self.ssrc is None or self.probation:
            return 0
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative number of packets lost (negative with duplicates), RFC 3550 A.3."""
        return self.expected - self.received

    def update(self, ssrc: int, seq: int) -> SequenceUpdate:
        """Account for one packet; RFC 3550 A.1 `update_seq` plus SSRC change detection."""
        new_source = False
        if ssrc != self.ssrc:
            self._new_source(ssrc, seq)
            new_source = True
        udelta = (seq - self.max_seq) % SEQ_MOD
        if self.probation:
            if seq == (self.max_seq + 1) % SEQ_MOD:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return SequenceUpdate(True, self.extended_max, new_source)
            else:
                self.probation = self.min_sequential - 1
                self.max_seq = seq
            return SequenceUpdate(False, None, new_source)
        if udelta < self.max_dropout:
            if seq < self.max_seq:
                self.cycles += SEQ_MOD  # wrapped
            self.max_seq = seq
            ext = self.extended_max
        elif udelta <= SEQ_MOD - self.max_misorder:
            if seq == self._bad_seq:
                # A.1: two sequential packets after a big jump: the sender restarted.
                self._init_seq(seq)
                self.received += 1
                return SequenceUpdate(True, self.extended_max, new_source, resynced=True)
            self._bad_seq = (seq + 1) % SEQ_MOD
            return SequenceUpdate(False, None, new_source)
        else:
            # Duplicate or reordered packet: extend it relative to max_seq.
            ext = self.extended_max + seq_delta(seq, self.max_seq)
        self.received += 1
        return SequenceUpdate(True, ext, new_source)


class RtpSender:
    """Stamps our outgoing packets: own SSRC, sequence and timestamp (RFC 3550 §5.1).

    Initial SSRC, sequence number and timestamp are random as §5.1 asks (known-plaintext
    attacks on SRTP); the random source is injected so tests can predict every byte.
    The marker bit is set on the first packet of each talkspurt (RFC 3551 §4.1): the very
    first packet and the first one after `skip()` (silence or DTX).
    """

    def __init__(self, payload_type: int, rng: random.Random, *, ssrc: int | None = None) -> None:
        self.payload_type = payload_type
        self.ssrc = rng.getrandbits(32) if ssrc is None else ssrc
        self.sequence = rng.getrandbits(16)
        self.timestamp = rng.getrandbits(32)
        self.packets_sent = 0
        self.octets_sent = 0
        self._talkspurt_start = True

    def stamp(
        self,
        payload: bytes,
        ticks: int,
        *,
        payload_type: int | None = None,
        marker: bool | None = None,
    ) -> RtpPacket:
        """Wrap `payload` at the current timestamp, then advance it by `ticks` RTP units.

        `ticks=0` keeps the timestamp, as RFC 4733 events need for their updates.
        """
        if marker is None:
            marker = self._talkspurt_start
        packet = RtpPacket(
            payload_type=self.payload_type if payload_type is None else payload_type,
            sequence=self.sequence,
            timestamp=self.timestamp,
            ssrc=self.ssrc,
            payload=payload,
            marker=marker,
        )
        self._talkspurt_start = False
        self.sequence = (self.sequence + 1) % SEQ_MOD
        self.timestamp = (self.timestamp + ticks) % TS_MOD
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return packet

    def stamp_bytes(self, payload: bytes, ticks: int) -> tuple[bytes, int]:
        """`stamp(payload, ticks).serialize()` and its timestamp, without the packet object.

        The mixer's per-listener hot path: the same octets (no CSRC, extension or padding),
        one struct pack instead of a dataclass and its checks.
        """
        marker = 0x80 if self._talkspurt_start else 0
        timestamp = self.timestamp
        data = _HEADER.pack(
            0x80, marker | self.payload_type, self.sequence, timestamp, self.ssrc % TS_MOD
        )
        self._talkspurt_start = False
        self.sequence = (self.sequence + 1) % SEQ_MOD
        self.timestamp = (timestamp + ticks) % TS_MOD
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return data + payload, timestamp

    def skip(self, ticks: int) -> None:
        """Time passes without a packet (silence): the next packet starts a talkspurt."""
        self.timestamp = (self.timestamp + ticks) % TS_MOD
        self._talkspurt_start = True
