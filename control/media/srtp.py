"""SDES-SRTP: `a=crypto` negotiation (RFC 4568) and SRTP/SRTCP via pylibsrtp (RFC 3711).

Only what Chorus answers with is supported: the two RFC 4568 §6.2 suites built on
AES-CM-128 with HMAC-SHA1 (80- and 32-bit RTP tags), one `inline:` key per line, no MKI
and no session parameters.  Lines using anything else parse (so we can see them) but
are never chosen.  Keys come from an injected random source (`os.urandom` in
production, a deterministic one in tests).
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pylibsrtp

__all__ = [
    "SUITES",
    "CryptoAttribute",
    "CryptoChoice",
    "CryptoNegotiationError",
    "SrtpContext",
    "SrtpError",
    "SrtpPolicy",
    "accept_answer",
    "answer_crypto",
    "generate_crypto",
    "offer_crypto",
]

RandBytes = Callable[[int], bytes]

# RFC 4568 §6.2: suite name -> (libsrtp profile, master key + salt length in octets).
SUITES: dict[str, tuple[int, int]] = {
    "AES_CM_128_HMAC_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
    "AES_CM_128_HMAC_SHA1_32": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 30),
}
# RFC 4568 §6.2.1/6.2.2: the key lifetime these suites allow for SRTP is 2^48 packets.
_MAX_LIFETIME = 1 << 48
_TAG = re.compile(r"^[0-9]{1,9}$")
_LIFETIME = re.compile(r"^(?:2\^([0-9]{1,3})|([0-9]{1,20}))$")
_MKI = re.compile(r"^([0-9]{1,20}):([0-9]{1,3})$")


class SrtpError(ValueError):
    """A bad `a=crypto` line, or an SRTP packet that failed authentication or replay."""


class CryptoNegotiationError(SrtpError):
    """No acceptable crypto line where our policy needs one: answer with `status`."""

    def __init__(self, reason: str, status: int = 488) -> None:
        super().__init__(reason)
        self.status = status  # RFC 3261 §21.4.26 Not Acceptable Here


class SrtpPolicy(enum.Enum):
    DISABLED = "disabled"
    OPTIONAL = "optional"
    MANDATORY = "mandatory"


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """One `a=crypto` value, RFC 4568 §9.1 (SRTP key parameters of §6.1)."""

    tag: int
    suite: str
    key: bytes  # master key || master salt
    lifetime: int | None = None
    mki: tuple[int, int] | None = None  # (value, length in octets)
    session_params: tuple[str, ...] = ()
    extra_keys: int = 0  # further `inline:` keys on the line (only usable with MKI)

    @classmethod
    def parse(cls, line: str) -> CryptoAttribute:
        """Parse `a=crypto:...`, `crypto:...` or just the value after the colon."""
        value = line.strip()
        for prefix in ("a=crypto:", "crypto:"):
            if value.lower().startswith(prefix):
                value = value[len(prefix) :]
                break
        fields = value.split()
        if len(fields) < 3:
            raise SrtpError("crypto attribute needs a tag, a suite and key parameters")
        tag_s, suite, key_params, *session = fields
        if not _TAG.match(tag_s):
            raise SrtpError(f"bad crypto tag {tag_s!r}")
        keys = key_params.split(";")
        first = keys[0]
        if not first.lower().startswith("inline:"):
            raise SrtpError("only the inline: key method exists for SRTP (RFC 4568 §6.1)")
        key_salt, *rest = first[len("inline:") :].split("|")
        try:
            key = base64.b64decode(key_salt, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SrtpError("crypto key is not base64") from exc
        if suite in SUITES and len(key) != SUITES[suite][1]:
            raise SrtpError(f"{suite} needs a {SUITES[suite][1]}-octet key and salt")
        lifetime: int | None = None
        mki: tuple[int, int] | None = None
        if len(rest) > 2:
            raise SrtpError("too many fields in crypto key parameter")
        for part in rest:
            m_mki = _MKI.match(part)
            m_life = _LIFETIME.match(part)
            if m_mki and mki is None:
                mki = (int(m_mki.group(1)), int(m_mki.group(2)))
                if not 1 <= mki[1] <= 128:
                    raise SrtpError("MKI length must be 1..128")
            elif m_life and lifetime is None and mki is None:
                power, plain = m_life.groups()
                lifetime = 1 << int(power) if power is not None else int(plain)
            else:
                raise SrtpError(f"bad crypto key field {part!r}")
        return cls(int(tag_s), suite, key, lifetime, mki, tuple(session), len(keys) - 1)

    def __str__(self) -> str:
        """The attribute value, as written after `a=crypto:`."""
        key = "inline:" + base64.b64encode(self.key).decode("ascii")
        if self.lifetime is not None:
            n = self.lifetime.bit_length() - 1
            key += f"|2^{n}" if self.lifetime == 1 << n else f"|{self.lifetime}"
        if self.mki is not None:
            key += f"|{self.mki[0]}:{self.mki[1]}"
        return " ".join([str(self.tag), self.suite, key, *self.session_params])

    @property
    def supported(self) -> bool:
        """Can an `SrtpContext` use this line?  See the module docstring."""
        return (
            self.suite in SUITES
            and self.mki is None
            and not self.session_params
            and self.extra_keys == 0
            and (self.lifetime is None or self.lifetime <= _MAX_LIFETIME)
        )


def generate_crypto(tag: int, suite: str, randbytes: RandBytes) -> CryptoAttribute:
    """A fresh master key and salt for `suite` (RFC 4568 §6.1: new key per offer/answer)."""
    if suite not in SUITES:
        raise ValueError(f"unsupported suite {suite}")
    key = randbytes(SUITES[suite][1])
    if len(key) != SUITES[suite][1]:
        raise ValueError("random source returned the wrong length")
    return CryptoAttribute(tag, suite, key)


@dataclass(frozen=True, slots=True)
class CryptoChoice:
    """The negotiated pair: `local` keys what we send, `remote` what we receive."""

    local: CryptoAttribute
    remote: CryptoAttribute

    def context(self) -> SrtpContext:
        return SrtpContext(self.local, self.remote)


def _parse_all(lines: Sequence[str | CryptoAttribute]) -> list[CryptoAttribute]:
    parsed = []
    for line in lines:
        if isinstance(line, CryptoAttribute):
            parsed.append(line)
            continue
        try:
            parsed.append(CryptoAttribute.parse(line))
        except SrtpError:
            continue  # RFC 4568 §7.1.1: an attribute we cannot use is skipped
    return parsed


def answer_crypto(
    offered: Sequence[str | CryptoAttribute],
    policy: SrtpPolicy,
    randbytes: RandBytes,
    *,
    secure_profile: bool,
) -> CryptoChoice | None:
    """Pick the offered line to accept and make our answer line for it.

    RFC 4568 §7.1.2: the answer carries exactly one crypto line with the same tag and
    suite as the accepted offer line, and our own key.  The offer's lines are in its
    preference order, so the first usable one wins.  `secure_profile` says the m-line
    is RTP/SAVP (or SAVPF): such a stream cannot fall back to plain RTP, so when we
    cannot (or may not) do SRTP the offer must be refused with 488.  Returns None for
    plain RTP.
    """
    if policy is SrtpPolicy.DISABLED:
        if secure_profile:
            raise CryptoNegotiationError("SRTP is disabled here")
        return None
    for remote in _parse_all(offered):
        if remote.supported:
            local = generate_crypto(remote.tag, remote.suite, randbytes)
            return CryptoChoice(local=local, remote=remote)
    if secure_profile or policy is SrtpPolicy.MANDATORY:
        raise CryptoNegotiationError("no acceptable a=crypto line")
    return None


def offer_crypto(randbytes: RandBytes) -> list[CryptoAttribute]:
    """Our offer: both suites, strongest tag first (RFC 4568 §7.1.1 preference order)."""
    return [
        generate_crypto(1, "AES_CM_128_HMAC_SHA1_80", randbytes),
        generate_crypto(2, "AES_CM_128_HMAC_SHA1_32", randbytes),
    ]


def accept_answer(
    offered: Sequence[CryptoAttribute], answer: str | CryptoAttribute
) -> CryptoChoice:
    """Match the answerer's line to the one of ours with its tag (RFC 4568 §7.1.3)."""
    remote = answer if isinstance(answer, CryptoAttribute) else CryptoAttribute.parse(answer)
    for local in offered:
        if local.tag == remote.tag:
            if local.suite != remote.suite or not remote.supported:
                raise CryptoNegotiationError("answered crypto line does not match our offer")
            return CryptoChoice(local=local, remote=remote)
    raise CryptoNegotiationError(f"answered crypto tag {remote.tag} was not offered")


class SrtpContext:
    """SRTP and SRTCP for one media stream, both directions (RFC 3711).

    Our key protects what we send to any SSRC of ours; the peer's key unprotects what
    it sends, whatever SSRC it picks (libsrtp's "any outbound / any inbound" streams).
    Failures (authentication, replay, garbage) raise `SrtpError`.
    """

    def __init__(self, local: CryptoAttribute, remote: CryptoAttribute) -> None:
        if not (local.supported and remote.supported):
            raise SrtpError("unsupported crypto parameters")
        if local.suite != remote.suite:
            raise SrtpError("both directions must use the same crypto suite")
        profile = SUITES[local.suite][0]
        Policy = pylibsrtp.Policy
        self._tx = pylibsrtp.Session(
            Policy(key=local.key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        )
        self._rx = pylibsrtp.Session(
            Policy(key=remote.key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
        )

    def protect(self, rtp: bytes) -> bytes:
        try:
            return bytes(self._tx.protect(rtp))
        except pylibsrtp.Error as exc:
            raise SrtpError(f"SRTP protect failed: {exc}") from exc

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        try:
            return bytes(self._tx.protect_rtcp(rtcp))
        except pylibsrtp.Error as exc:
            raise SrtpError(f"SRTCP protect failed: {exc}") from exc

    def unprotect(self, srtp: bytes) -> bytes:
        try:
            return bytes(self._rx.unprotect(srtp))
        except pylibsrtp.Error as exc:
            raise SrtpError(f"SRTP unprotect failed: {exc}") from exc

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        try:
            return bytes(self._rx.unprotect_rtcp(srtcp))
        except pylibsrtp.Error as exc:
            raise SrtpError(f"SRTCP unprotect failed: {exc}") from exc
