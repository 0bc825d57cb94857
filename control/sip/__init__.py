"""Sans-IO SIP (RFC 3261): messages, transactions, dialogs, session timers (RFC 4028), SDP;
plus asyncio transports.

The package re-exports the sans-IO core. The asyncio layer (``transport``, ``useragent``,
``session``) is imported from its modules, so that importing the core never pulls in sockets.
"""

from control.sip.dialog import Dialog, DialogId, dialog_id_of_request
from control.sip.errors import SipError, SipParseError
from control.sip.events import (
    AckFor2xxReceived,
    AckReceived,
    RefreshDue,
    ResponseReceived,
    SessionExpired,
    TimedOut,
    TransactionTerminated,
)
from control.sip.framing import StreamFramer, build_error_response
from control.sip.headers import ContentType, CSeq, Headers, Via, parse_cseq, parse_via
from control.sip.message import (
    Request,
    Response,
    parse_message,
    reason_phrase,
)
from control.sip.sessiontimer import (
    IntervalTooSmall,
    Negotiated,
    Refresher,
    SessionExpires,
    SessionTimer,
    TimerPolicy,
)
from control.sip.transaction import (
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Timers,
    TwoHundredRetransmitter,
    build_cancel,
    client_key,
    server_key,
)
from control.sip.uri import AbsoluteUri, NameAddr, SipUri, Uri, parse_name_addr, parse_uri

__all__ = [
    "AbsoluteUri",
    "AckFor2xxReceived",
    "AckReceived",
    "CSeq",
    "ContentType",
    "Dialog",
    "DialogId",
    "Headers",
    "IntervalTooSmall",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NameAddr",
    "Negotiated",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "RefreshDue",
    "Refresher",
    "Request",
    "Response",
    "ResponseReceived",
    "SessionExpired",
    "SessionExpires",
    "SessionTimer",
    "SipError",
    "SipParseError",
    "SipUri",
    "StreamFramer",
    "TimedOut",
    "TimerPolicy",
    "Timers",
    "TransactionTerminated",
    "TwoHundredRetransmitter",
    "Uri",
    "Via",
    "build_cancel",
    "build_error_response",
    "client_key",
    "dialog_id_of_request",
    "parse_cseq",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "reason_phrase",
    "server_key",
]
