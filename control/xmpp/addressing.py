"""SIP URI ↔ JID (RFC 7247 §5, RFC 7622), sans-IO: which domains the gateway serves, and how
an address crosses.

- ``sip:user@domain`` ↔ ``user@domain``. The SIP user part arrives percent-encoded (RFC 3261
  §25.1); decoded, any character a JID localpart forbids (RFC 7622 §3.3.1: space ``" & ' / :
  < > @``) and the backslash that starts an escape are escaped by XEP-0106 (``\\20`` …) so the
  JID is valid and comes back to the same SIP user. The other way, XEP-0106 escapes are undone
  and what a SIP user part may not hold unescaped is percent-encoded.
- A JID resource ↔ the GRUU ``gr`` URI parameter (RFC 7247 §5.2, RFC 5627), percent-encoded in
  the parameter.
- The gateway serves two sets of domains: ``sip_domains`` are the SIP users' domains that XMPP
  users reach through the component; ``xmpp_domains`` are the XMPP domains SIP users reach. An
  address on the wrong side, or in a domain neither set names, is :class:`AddressRefused`,
  carrying the SIP status and the XMPP error condition to answer with (RFC 7247 §5 leaves the
  policy to the gateway; refusing is what keeps a message from vanishing).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from control.sip.uri import SipUri, Uri

__all__ = [
    "AddressRefused",
    "Addressing",
    "Jid",
    "escape_localpart",
    "parse_jid",
    "unescape_localpart",
]

# XEP-0106 §4: the characters escaped, in the order the table gives them. The backslash is
# escaped only where it begins a sequence that would unescape, as the XEP requires.
_ESCAPES = {
    " ": "\\20",
    '"': "\\22",
    "&": "\\26",
    "'": "\\27",
    "/": "\\2f",
    ":": "\\3a",
    "<": "\\3c",
    ">": "\\3e",
    "@": "\\40",
}
_UNESCAPES = {code: char for char, code in _ESCAPES.items()} | {"\\5c": "\\"}
# RFC 3261 §25.1: unreserved and user-unreserved stay literal in a user part.
_SIP_USER_SAFE = "-_.!~*'()&=+$,;?/"
# RFC 3261 §25.1 paramchar: param-unreserved and unreserved.
_SIP_PARAM_SAFE = "-_.!~*'()[]/:&+$"
MAX_PART = 1023  # RFC 7622 §3.2/§3.3: each JID part at most 1023 octets


class AddressRefused(Exception):
    """An address the gateway does not serve or cannot map: answered with ``sip_status`` on
    the SIP side and the stanza error ``condition`` on the XMPP side."""

    def __init__(self, reason: str, *, sip_status: int = 404, condition: str = "item-not-found"):
        super().__init__(reason)
        self.reason = reason
        self.sip_status = sip_status
        self.condition = condition


@dataclass(frozen=True, slots=True)
class Jid:
    """A JID: ``local@domain/resource`` (RFC 7622); the domain is lower-cased."""

    local: str | None
    domain: str
    resource: str | None = None

    @property
    def bare(self) -> str:
        return f"{self.local}@{self.domain}" if self.local else self.domain

    def __str__(self) -> str:
        return f"{self.bare}/{self.resource}" if self.resource else self.bare


def parse_jid(text: str) -> Jid:
    """``local@domain/resource``: the resource is everything after the first '/', the local
    part what comes before an '@' ahead of it (RFC 7622 §3.1). Empty parts are refused."""
    bare, slash, resource = text.partition("/")
    local, at, domain = bare.rpartition("@")
    if (slash and not resource) or (at and not local) or not domain:
        raise AddressRefused(f"malformed JID {text!r}", sip_status=400, condition="jid-malformed")
    if any(len(part.encode()) > MAX_PART for part in (local, domain, resource)):
        raise AddressRefused("JID part too long", sip_status=400, condition="jid-malformed")
    return Jid(local or None, domain.lower().rstrip("."), resource or None)


def escape_localpart(user: str) -> str:
    """XEP-0106 escaping of a decoded SIP user for a JID localpart."""
    out = []
    for index, char in enumerate(user):
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char == "\\" and user[index + 1 : index + 3].lower() in _hex_codes():
            out.append("\\5c")
        else:
            out.append(char)
    return "".join(out)


def unescape_localpart(local: str) -> str:
    """XEP-0106 unescaping: every known ``\\xx`` back to its character, the rest as is."""
    out = []
    index = 0
    while index < len(local):
        code = local[index : index + 3].lower()
        if local[index] == "\\" and code in _UNESCAPES:
            out.append(_UNESCAPES[code])
            index += 3
        else:
            out.append(local[index])
            index += 1
    return "".join(out)


def _hex_codes() -> set[str]:
    return {code[1:] for code in _UNESCAPES}


class Addressing:
    """The served domains and the mapping between them (config ``[xmpp]``)."""

    def __init__(self, sip_domains: tuple[str, ...], xmpp_domains: tuple[str, ...]) -> None:
        self.sip_domains = frozenset(d.lower() for d in sip_domains)
        self.xmpp_domains = frozenset(d.lower() for d in xmpp_domains)

    def serves_xmpp_domain(self, host: str) -> bool:
        """A SIP request to ``host`` is the gateway's (the application map asks)."""
        return host.lower() in self.xmpp_domains

    # SIP → XMPP -------------------------------------------------------------------------

    def sip_to_jid(self, uri: SipUri, *, side: str, sender: bool = False) -> Jid:
        """The JID for a SIP URI. ``side`` says which set its domain must be in: "xmpp" for a
        recipient (an XMPP user), "sip" for a sender (a SIP user, shown under the component).
        A sender outside it is refused 403 / ``not-allowed``, a recipient 404 /
        ``item-not-found``."""
        self._check(uri.host, side, sender)
        user = uri.unescaped_user()
        if not user:
            raise AddressRefused(f"no user in {uri}", sip_status=404)
        local = escape_localpart(user)
        gr = uri.params.get("gr")
        resource = unquote(gr) if gr else None
        if len(local.encode()) > MAX_PART or (resource and len(resource.encode()) > MAX_PART):
            raise AddressRefused("address too long for a JID", sip_status=400)
        return Jid(local, uri.host.lower(), resource)

    def call_parties(self, request_uri: SipUri, caller: Uri) -> tuple[Jid, Jid]:
        """The two JIDs of a SIP user's INVITE to an XMPP user (a Jingle call, a chat
        session): the callee from ``request_uri`` (an XMPP domain) and the caller from the
        From URI (a SIP domain; any other scheme is refused 403, as a foreign domain is)."""
        callee = self.sip_to_jid(request_uri, side="xmpp")
        if not isinstance(caller, SipUri):
            raise AddressRefused("caller is not a SIP URI", sip_status=403, condition="not-allowed")
        return callee, self.sip_to_jid(caller, side="sip", sender=True)

    # XMPP → SIP -------------------------------------------------------------------------

    def jid_to_sip(self, jid: Jid, *, side: str, sender: bool = False) -> SipUri:
        """The SIP URI for a JID; ``side`` and ``sender`` as for :meth:`sip_to_jid` ("sip" for
        a recipient under the component's domains, "xmpp" for an XMPP sender)."""
        self._check(jid.domain, side, sender)
        if not jid.local:
            raise AddressRefused(f"no user in {jid}", sip_status=404)
        user = quote(unescape_localpart(jid.local), safe=_SIP_USER_SAFE)
        params: dict[str, str | None] = {}
        if jid.resource:
            params["gr"] = quote(jid.resource, safe=_SIP_PARAM_SAFE)
        return SipUri(host=jid.domain, user=user, params=params)

    def _check(self, domain: str, side: str, sender: bool) -> None:
        served = self.xmpp_domains if side == "xmpp" else self.sip_domains
        if domain.lower() not in served:
            what = "XMPP" if side == "xmpp" else "SIP"
            raise AddressRefused(
                f"{what} domain {domain} is not served by this gateway",
                sip_status=403 if sender else 404,
                condition="not-allowed" if sender else "item-not-found",
            )
