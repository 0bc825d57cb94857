"""Header fields: the ordered container, canonical names, and the structured ones (Via, CSeq).

Headers are kept as raw text in arrival order so that what we forward or copy into a response
is exactly what the peer sent (RFC 3261 §8.2.6.2 copies Via, From, To, Call-ID, CSeq verbatim);
structured values are parsed on demand.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from control.sip.errors import SipError
from control.sip.uri import (
    NameAddr,
    format_host,
    format_params,
    is_token,
    parse_name_addr,
    parse_params,
    split_header_list,
    split_host_port,
)

# RFC 3261 §7.3.3 and later RFCs: compact forms.
COMPACT_FORMS = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "In-Reply-To",
        "Max-Forwards",
        "MIME-Version",
        "Min-Expires",
        "Min-SE",
        "Organization",
        "Priority",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "Server",
        "Session-Expires",
        "Subject",
        "Subscription-State",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
        "X-Chorus-App",
    )
}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1): they may be combined or
# split freely. The rest (Date, the auth headers, …) contain commas of their own.
LIST_HEADERS = frozenset(
    {
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow",
        "Allow-Events",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Proxy-Require",
        "Record-Route",
        "Require",
        "Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    }
)

# Headers that may appear at most once (RFC 3261 Table 2; RFC 4475 §3.3.8).
SINGLE_HEADERS = frozenset(
    {"Call-ID", "Content-Length", "Content-Type", "CSeq", "From", "Max-Forwards", "To"}
)


@functools.lru_cache(maxsize=4096)
def canonical_name(name: str) -> str:
    lower = name.lower()
    if lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return _CANONICAL.get(lower, name)


_KEYS: dict[str, str] = {}  # header name as asked -> lookup key; bounded by _KEY_CACHE
_KEY_CACHE = 4096


def _key(name: str) -> str:
    """The lookup key of a header name: canonical, then case-folded (§7.3.1).

    A plain dict in front: the stack asks for the same few names thousands of times a
    second, and a dict lookup is about half the cost of an lru_cache call."""
    key = _KEYS.get(name)
    if key is None:
        key = canonical_name(name).lower()
        if len(_KEYS) >= _KEY_CACHE:
            _KEYS.clear()  # names from peers must not grow it without bound
        _KEYS[name] = key
    return key


_T = TypeVar("_T")


class Headers:
    """Ordered, case-insensitive, multi-valued header fields.

    Every message is looked up a few dozen times on its way through the stack (the parser's
    checks, transaction matching, the dialog, the application), so a case-folded key ->
    values index is built on the first lookup and dropped by any change: a lookup is one
    dict access, not a scan of every line. The index holds only strings and tuples, which
    the garbage collector stops tracking: a message kept for a transaction's 32 s costs the
    collector two objects (the headers and their line list), not one list per header.
    """

    __slots__ = ("_items", "_index", "_memo")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in (items or [])]
        self._index: dict[str, tuple[str, ...]] | None = None
        self._memo: dict[str, Any] | None = None

    @classmethod
    def of_canonical(
        cls, items: list[tuple[str, str]], index: dict[str, tuple[str, ...]] | None = None
    ) -> Headers:
        """Headers over lines whose names are canonical already (the parser's), taken as
        they are: not canonicalised again, not copied. ``index``, when given, must be what
        the first lookup would build from ``items`` (the parser builds both in one pass)."""
        headers = cls.__new__(cls)
        headers._items = items
        headers._index = index
        headers._memo = None
        return headers

    def parsed(self, name: str, parse: Callable[[Headers], _T]) -> _T:
        """``parse(self)``, remembered under ``name`` until the headers change: a message's
        From, To, CSeq and Via are read a dozen times on its way through the stack, and the
        parser has parsed them all once already (``remember``).

        ``name`` is the canonical name of the only header ``parse`` reads: ``add`` forgets
        just what was parsed from the header it appends to, the other changes everything."""
        memo = self._memo
        if memo is None:
            memo = self._memo = {}
        elif name in memo:
            return memo[name]
        value = parse(self)
        memo[name] = value
        return value

    def values(self, name: str) -> tuple[str, ...]:
        """Every header line's value as received (``get_raw`` without the copy)."""
        index = self._index
        if index is None:
            index = self._lookup()
        return index.get(_KEYS.get(name) or _key(name), ())

    def remembered(self) -> dict[str, Any]:
        """What ``parsed`` and ``remember`` hold now, by name (not to be changed)."""
        return self._memo or {}

    def remember(self, parsed: dict[str, Any]) -> None:
        """Store what ``parsed(name, …)`` would return for each name (the parser's own
        results), all at once."""
        memo = self._memo
        if memo is None:
            self._memo = parsed
        else:
            memo.update(parsed)

    def _lookup(self) -> dict[str, tuple[str, ...]]:
        index = self._index
        if index is None:
            index = {}
            for name, value in self._items:
                key = name.lower()
                values = index.get(key)
                index[key] = (value,) if values is None else (*values, value)
            self._index = index
        return index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        """Equal when the same lines arrive in the same order (names canonical, values raw)."""
        if not isinstance(other, Headers):
            return NotImplemented
        return self._items == other._items

    __hash__ = None  # type: ignore[assignment]  # mutable container

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return _key(name) in self._lookup()

    def copy(self) -> Headers:
        return Headers.of_canonical(list(self._items))

    def get(self, name: str, default: str | None = None) -> str | None:
        index = self._index
        if index is None:
            index = self._lookup()
        values = index.get(_KEYS.get(name) or _key(name))
        return values[0] if values else default

    def get_raw(self, name: str) -> list[str]:
        """Every header line's value as received, one entry per line."""
        return list(self.values(name))

    def get_all(self, name: str) -> list[str]:
        """Every value, list headers split at their commas."""
        values = self.values(name)
        if values and canonical_name(name) in LIST_HEADERS:
            if len(values) == 1:
                return split_header_list(values[0])
            return [part for value in values for part in split_header_list(value)]
        return list(values)

    def add(self, name: str, value: str) -> None:
        canonical = canonical_name(name)
        self._items.append((canonical, value))
        self._index = None
        memo = self._memo
        if memo:  # a line appended changes only what is parsed from its own header
            memo.pop(canonical, None)

    def prepend(self, name: str, value: str) -> None:
        self._items.insert(0, (canonical_name(name), value))
        self._index = None
        self._memo = None

    def set(self, name: str, value: str) -> None:
        """Replace all lines of ``name`` with one, keeping the first one's position."""
        canonical = canonical_name(name)
        key = canonical.lower()
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self._items:
            if n.lower() == key:
                if not placed:
                    out.append((canonical, value))
                    placed = True
            else:
                out.append((n, v))
        if not placed:
            out.append((canonical, value))
        self._items = out
        self._index = None
        self._memo = None

    def remove(self, name: str) -> None:
        key = _key(name)
        self._items = [item for item in self._items if item[0].lower() != key]
        self._index = None
        self._memo = None

    def name_addrs(self, name: str) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.get_all(name)]


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (RFC 3261 §20.42); ``received``/``rport`` per RFC 3581."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {format_host(self.host)}{port}" + format_params(
            self.params
        )


# sent-protocol LWS sent-by: everything of a via-parm before its first ";" (no token, and no
# character of sent-by, is a ";").
_SENT_BY_RE = re.compile(
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+([^;]+?)[ \t]*"
)
_SENT_BY_COLON_RE = re.compile(r"[ \t]*:[ \t]*")


@functools.lru_cache(maxsize=4096)  # as uri.parse_name_addr: values are frozen
def parse_via(value: str) -> Via:
    """One via-parm (RFC 3261 §25.1): sent-protocol LWS sent-by *( SEMI via-params ).

    Any token/token/token protocol is well formed (protocol-name = "SIP" / token); the protocol
    is kept as received unless it is SIP/2.0, so that a 505 can still copy a ``SIP/7.0`` Via
    (RFC 4475 §3.1.2.16). LWS may surround the ``:`` of sent-by (HCOLON) but not split a host.
    """
    head, semi, param_text = value.strip(" \t").partition(";")
    sent = _sent_by(head)
    if sent is None or "\n" in param_text:
        raise SipError(400, f"bad Via {value!r}")
    protocol, transport, host, port = sent
    params = parse_params(";" + param_text) if semi else {}  # ";;x" stays an empty parameter
    return Via(transport, host, port, params, protocol)


@functools.lru_cache(maxsize=1024)
def _sent_by(text: str) -> tuple[str, str, str, int | None] | None:
    """Protocol, transport, host and port of a Via's part before its parameters, None when
    it is not one. Cached apart from the parameters: a peer's Vias differ in their branch
    only, so this part parses once per peer, not once per request."""
    match = _SENT_BY_RE.fullmatch(text)
    if match is None:
        return None
    name, version, transport, sent_by = match.groups()
    protocol = f"{name}/{version}"
    if protocol.upper() == "SIP/2.0":
        protocol = "SIP/2.0"
    host, port = split_host_port(_SENT_BY_COLON_RE.sub(":", sent_by))
    return protocol, transport.upper(), host, port


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: must be less than 2**31.


_CSEQ_RE = re.compile(r"[ \t]*([0-9]{1,10})[ \t]+([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*")


@functools.lru_cache(maxsize=4096)
def parse_cseq(value: str) -> CSeq:
    """``1*DIGIT LWS Method`` (RFC 3261 §20.16); the number must be below 2**31 (§8.1.1.5)."""
    match = _CSEQ_RE.fullmatch(value)
    if match is None:
        raise SipError(400, f"bad CSeq {value[:40]!r}")
    number = int(match.group(1))
    if number > MAX_CSEQ:
        raise SipError(400, "CSeq out of range")
    return CSeq(number, match.group(2))


@dataclass(frozen=True, slots=True)
class ContentType:
    type: str
    subtype: str
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def mime(self) -> str:
        return f"{self.type}/{self.subtype}"

    def __str__(self) -> str:
        return self.mime + format_params(self.params)


@functools.lru_cache(maxsize=256)  # values are frozen; peers send a handful of types
def parse_content_type(value: str) -> ContentType:
    """``m-type SLASH m-subtype *(SEMI m-parameter)`` (RFC 3261 §20.15): both types tokens."""
    mime, semi, rest = value.partition(";")
    main, slash, sub = mime.partition("/")
    main, sub = main.strip(" \t"), sub.strip(" \t")
    if not slash or not is_token(main) or not is_token(sub):
        raise SipError(400, f"bad Content-Type {value[:40]!r}")
    return ContentType(main.lower(), sub.lower(), parse_params(rest) if semi else {})
