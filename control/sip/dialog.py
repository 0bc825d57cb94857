"""Dialogs (RFC 3261 §12), sans-IO: identity, route set, CSeq, remote target.

A dialog knows how to build its next in-dialog request and how to check and absorb an incoming
one; it never sends anything. The session layer above decides what to send.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from control.sip.errors import SipError
from control.sip.headers import Headers
from control.sip.message import Request, Response
from control.sip.uri import NameAddr, SipUri, Uri, parse_name_addr

# RFC 3261 §12.2 / RFC 6665 §4.1.3 / RFC 3515: requests that refresh the remote target.
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})

DialogId = tuple[str, str, str]  # Call-ID, local tag, remote tag


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_party: NameAddr
    remote_party: NameAddr
    remote_target: Uri
    local_contact: NameAddr
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    secure: bool = False

    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uas(cls, request: Request, local_tag: str, local_contact: NameAddr) -> Dialog:
        """§12.1.1: route set is Record-Route in order, remote target is the Contact."""
        contacts = request.contacts
        if not contacts:
            raise SipError(400, "dialog-creating request without Contact")
        from_ = request.from_
        if from_.tag is None:
            raise SipError(400, "From without tag")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=from_.tag,
            local_party=request.to.with_tag(local_tag),
            remote_party=from_,
            remote_target=contacts[0].uri,
            local_contact=local_contact,
            route_set=request.headers.get_all("Record-Route"),
            local_seq=0,
            remote_seq=request.cseq.number,
            secure=isinstance(request.uri, SipUri) and request.uri.scheme == "sips",
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response) -> Dialog:
        """§12.1.2: route set is Record-Route reversed, remote target the response's Contact."""
        contacts = response.contacts
        if not contacts:
            raise SipError(400, "dialog-creating response without Contact")
        to = response.to
        if to.tag is None:
            raise SipError(400, "To without tag")
        from_ = request.from_
        assert from_.tag is not None, "our own requests always carry a From tag"
        local_contacts = request.contacts
        return cls(
            call_id=request.call_id,
            local_tag=from_.tag,
            remote_tag=to.tag,
            local_party=from_,
            remote_party=to,
            remote_target=contacts[0].uri,
            local_contact=local_contacts[0] if local_contacts else from_,
            route_set=list(reversed(response.headers.get_all("Record-Route"))),
            local_seq=request.cseq.number,
            remote_seq=None,
            secure=isinstance(request.uri, SipUri) and request.uri.scheme == "sips",
        )

    def create_request(
        self,
        method: str,
        *,
        via: str,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: list[tuple[str, str]] | None = None,
        cseq: int | None = None,
    ) -> Request:
        """§12.2.1.1: build an in-dialog request. ACK and CANCEL reuse a CSeq number."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        uri, routes = self._request_uri_and_routes()
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", "70")
        for route in routes:
            headers.add("Route", route)
        headers.add("From", str(self.local_party))
        headers.add("To", str(self.remote_party))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if method in TARGET_REFRESH or method == "ACK":
            headers.add("Contact", str(NameAddr(self.local_contact.uri)))
        for name, value in extra_headers or []:
            headers.add(name, value)
        if content_type is not None:
            headers.add("Content-Type", content_type)
        return Request(headers=headers, body=body, method=method, uri=uri)

    def _request_uri_and_routes(self) -> tuple[Uri, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0])
        if isinstance(first.uri, SipUri) and "lr" in first.uri.params:
            return self.remote_target, list(self.route_set)
        # Strict routing (RFC 2543 proxies): first route becomes the Request-URI (§12.2.1.1).
        routes = [*self.route_set[1:], f"<{self.remote_target}>"]
        return first.uri, routes

    def next_hop(self) -> Uri:
        """Where an in-dialog request physically goes: the first route, else the target."""
        if self.route_set:
            return parse_name_addr(self.route_set[0]).uri
        return self.remote_target

    def receive_request(self, request: Request) -> None:
        """§12.2.2: reject out-of-order CSeq with 500 and refresh the remote target."""
        cseq = request.cseq.number
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and cseq <= self.remote_seq:
                raise SipError(500, "CSeq out of order")
            self.remote_seq = cseq
        if request.method in TARGET_REFRESH:
            contacts = request.contacts
            if contacts:
                self.remote_target = contacts[0].uri

    def receive_response(self, request: Request, response: Response) -> None:
        """A 2xx to a target-refresh request updates the remote target (§12.2.1.2)."""
        if 200 <= response.status < 300 and request.method in TARGET_REFRESH:
            contacts = response.contacts
            if contacts:
                self.remote_target = contacts[0].uri


def dialog_id_of_request(request: Request) -> DialogId | None:
    """The id of the dialog an incoming request belongs to, from our side (To tag is ours)."""
    to_tag = request.to.tag
    from_tag = request.from_.tag
    if to_tag is None or from_tag is None:
        return None
    return (request.call_id, to_tag, from_tag)
