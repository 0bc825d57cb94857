"""What a Jingle call's signalling means on the SIP side of the gateway, sans-IO: the rules the
Jingle ↔ SIP audio bridge (issue 12 item 6) follows for ringing, hold, hang-up and codecs.

- A SIP final failure to the INVITE the gateway places for an XMPP caller becomes the
  session-terminate (or XEP-0353 reject) reason: :func:`reason_for_status`. XEP-0166 §7.4 has
  no status codes, so each reason stands for a family: 486/600 → ``busy``, 403/603 →
  ``decline``, 404/410/480/604 → ``gone``, 408 → ``timeout``, 487 → ``cancel``, 415/488/606 →
  ``incompatible-parameters``, anything else → ``general-error``; the code goes in ``<text/>``.
- The other way, an XMPP callee that ends a session it has not accepted (terminate, or a
  XEP-0353 reject) answers the SIP caller's INVITE with :func:`status_for_reason`.
- A SIP 180 is Jingle ``ringing`` (XEP-0167 §7.2): :func:`info_for_progress`.
- Hold (RFC 3264 §8.4, RFC 6337 §5.3): a SIP re-offer whose direction no longer receives is
  ``hold``, one that receives again ``unhold`` (:func:`info_for_direction`); a Jingle hold
  from the XMPP side becomes a re-offer toward SIP that stops receiving
  (:func:`direction_for_info`: sendonly, or inactive when we were only receiving).
- Codecs: the gateway bridges Opus, G.722 and PCMU (and RFC 4733 telephone-event along
  with them); :func:`bridged_payloads` keeps those of an offer in the offerer's order
  (RFC 3264 §6.1), the answer's list.
"""

from __future__ import annotations

from collections.abc import Sequence

from control.sip.sdp import Direction
from control.xmpp.jingle import PayloadType, Reason, RtpDescription

__all__ = [
    "BRIDGED_CODECS",
    "bridged_payloads",
    "direction_for_info",
    "info_for_direction",
    "info_for_progress",
    "reason_for_status",
    "status_for_reason",
]

# (name, clock rate, channels) the audio engine decodes and encodes; RFC 7587 §7: Opus is
# always opus/48000/2 in SDP, whatever it carries.
BRIDGED_CODECS: tuple[tuple[str, int, int], ...] = (
    ("opus", 48000, 2),
    ("g722", 8000, 1),
    ("pcmu", 8000, 1),
)
_AUXILIARY = (("telephone-event", 8000), ("telephone-event", 48000))

_REASON_FOR_STATUS: dict[int, str] = {
    403: "decline",
    404: "gone",
    408: "timeout",
    410: "gone",
    415: "incompatible-parameters",
    480: "gone",
    486: "busy",
    487: "cancel",
    488: "incompatible-parameters",
    600: "busy",
    603: "decline",
    604: "gone",
    606: "incompatible-parameters",
}

_STATUS_FOR_REASON: dict[str, int] = {
    "busy": 486,
    "decline": 603,
    "success": 603,  # ended before it was accepted: the callee did not take the call
    "gone": 480,
    "timeout": 480,  # no answer (RFC 3261 §21.4.18), not a transaction timeout
    "expired": 480,
    "cancel": 487,
    "alternative-session": 480,
    "incompatible-parameters": 488,
    "unsupported-applications": 488,
    "unsupported-transports": 488,
    "security-error": 488,
    "connectivity-error": 503,
    "failed-transport": 503,
}


def reason_for_status(status: int) -> Reason:
    """The Jingle reason for a SIP final failure (module doc)."""
    if not 300 <= status <= 699:
        raise ValueError(f"{status} is not a SIP failure")
    return Reason(_REASON_FOR_STATUS.get(status, "general-error"), f"SIP {status}")


def status_for_reason(reason: Reason | None) -> int:
    """The SIP final response for a session the XMPP callee ended unaccepted; no reason is
    a decline (603), an error the XEP gives no closer meaning to is 500."""
    if reason is None:
        return 603
    return _STATUS_FOR_REASON.get(reason.condition, 500)


def info_for_progress(status: int) -> str | None:
    """``ringing`` for a 180 (RFC 3261 §21.1.1); other provisional responses say nothing."""
    return "ringing" if status == 180 else None


def info_for_direction(direction: Direction, *, held: bool) -> str | None:
    """The session-info for a SIP re-offer's direction (as the SIP party wrote it), given
    whether the XMPP side was told of a hold already; None when nothing changed."""
    if not direction.receives and not held:
        return "hold"
    if direction.receives and held:
        return "unhold"
    return None


def direction_for_info(kind: str, current: Direction) -> Direction | None:
    """The direction of the re-offer toward SIP for the XMPP side's ``hold``/``unhold``
    (RFC 3264 §8.4), from ``current``, ours; None for other payloads."""
    if kind == "hold":
        return Direction.from_flags(send=current.sends, recv=False)
    if kind == "unhold":
        return Direction.SENDRECV
    return None


def _key(pt: PayloadType) -> tuple[str, int, int]:
    return ((pt.name or "").lower(), pt.clockrate or 0, pt.channels)


def bridged_payloads(
    description: RtpDescription, codecs: Sequence[tuple[str, int, int]] = BRIDGED_CODECS
) -> tuple[PayloadType, ...]:
    """The offered payload types the gateway can bridge, in the offerer's order, with
    telephone-event kept when a voice codec is; empty when none fits (answer 488 /
    ``incompatible-parameters``). A static type without a name (XEP-0167 allows it for
    ids 0-34) is read as RFC 3551 names it."""
    wanted = {(name.lower(), rate, channels) for name, rate, channels in codecs}
    static = {0: ("pcmu", 8000, 1), 9: ("g722", 8000, 1)}
    voice = [
        pt
        for pt in description.payload_types
        if _key(pt) in wanted or (pt.name is None and static.get(pt.id) in wanted)
    ]
    if not voice:
        return ()
    events = [
        pt
        for pt in description.payload_types
        if ((pt.name or "").lower(), pt.clockrate or 0) in _AUXILIARY
    ]
    return tuple(voice + events)
