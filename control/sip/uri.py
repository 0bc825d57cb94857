"""SIP URIs and name-addr values (RFC 3261 §19.1, §20.10, §25.1).

Parsing is strict where RFC 4475 says an element must reject (embedded whitespace, unbalanced
quotes, escaped headers in a Request-URI) and lenient where it says to accept (unknown schemes,
unknown parameters, escaped characters that need no escaping).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace
from urllib.parse import unquote_to_bytes

from control.sip.errors import SipError

_TOKEN_CHARS = "-.!%*_+`'~"
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_HOST_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?")
_WS = " \t"
# Characters no URI may hold unescaped (RFC 3261 §25.1, RFC 3986 §2): whitespace and controls,
# and the delimiters that frame a URI inside a header value. Rejecting them keeps every parsed
# URI safe to write back between ``<`` and ``>``.
_URI_FORBIDDEN_RE = re.compile(r'[\x00-\x20\x7f<>"]')
# A parameter value is a token, a host (IPv6 reference included) or a URI paramchar run
# (RFC 3261 §25.1 gen-value, paramchar), or else a quoted-string: none holds these unquoted.
_PARAM_VALUE_FORBIDDEN_RE = re.compile(r'[\x00-\x20\x7f<>",;\\]')


def is_token(text: str) -> bool:
    return bool(text) and _TOKEN_RE.fullmatch(text) is not None


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    if '"' not in text:
        return text.split(sep)  # nothing quoted: no separator to skip (the common case)
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
            continue
        if quoted and char == "\\":
            current.append(char)
            escaped = True
            continue
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise SipError(400, "unterminated quoted string")
    parts.append("".join(current))
    return parts


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;a=b;c`` (the leading ``;`` optional); names lower-cased, order kept."""
    params: dict[str, str | None] = {}
    text = text.strip(_WS)
    if not text:
        return params
    if text.startswith(";"):
        text = text[1:]
    keys = _PARAM_KEYS
    if _PARAM_TEXT_SPECIAL_RE.search(text) is None:
        # No whitespace to strip, no quoted-string, no character a value may not hold: the
        # loop below without its strips and value checks (the usual case: branch, tag, lr).
        for part in text.split(";"):
            if not part:
                raise SipError(400, "empty parameter")
            name, eq, value = part.partition("=")
            key = keys.get(name) or _param_key(name)
            params[key] = value if eq else None
        return params
    for part in _split_outside_quotes(text, ";"):
        part = part.strip(_WS)
        if not part:
            raise SipError(400, "empty parameter")
        name, eq, value = part.partition("=")
        name = name.strip(_WS)
        key = keys.get(name) or _param_key(name)
        if not eq:
            params[key] = None
            continue
        value = value.strip(_WS)
        if not _is_param_value(value):
            raise SipError(400, f"bad value for parameter {name!r}")
        params[key] = value
    return params


# Parameter names seen and found to be tokens -> their lower-case form: branch, tag, lr,
# transport, … come with nearly every header, and a dict hit is cheaper than the token check.
_PARAM_KEYS: dict[str, str] = {}
_PARAM_KEY_CACHE = 1024
# What makes a parameter list need parse_params' full loop: whitespace, a quote, or a
# character no unquoted value may hold (_PARAM_VALUE_FORBIDDEN_RE but the ";" separator).
_PARAM_TEXT_SPECIAL_RE = re.compile(r'[\x00-\x20\x7f<>",\\]')


def _param_key(name: str) -> str:
    """The key of a parameter name not seen yet; SipError when it is not a token."""
    if not is_token(name):
        raise SipError(400, f"bad parameter name {name!r}")
    key = name.lower()
    if len(_PARAM_KEYS) >= _PARAM_KEY_CACHE:
        _PARAM_KEYS.clear()  # names from peers must not grow it without bound
    _PARAM_KEYS[name] = key
    return key


def _is_param_value(value: str) -> bool:
    """RFC 3261 §25.1 gen-value: token / host / quoted-string (an empty value is tolerated)."""
    if value.startswith('"'):
        try:
            return _closing_quote(value) == len(value) - 1
        except SipError:
            return False
    return _PARAM_VALUE_FORBIDDEN_RE.search(value) is None


def format_params(params: dict[str, str | None]) -> str:
    if not params:
        return ""
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params.items()])


def split_host_port(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` with IPv6 references in brackets (RFC 3261 §25.1 hostport)."""
    match = _HOST_RE.fullmatch(text)
    if match is None:
        raise SipError(400, f"bad host {text!r}")
    host, port_text = match.group(1), match.group(2)
    port = int(port_text) if port_text is not None else None
    if port is not None and not 0 < port < 65536:
        raise SipError(400, f"bad port {port_text}")
    return host, port


def format_host(host: str) -> str:
    """IPv6 literals are bracketed wherever a host appears in SIP (RFC 3261 §25.1)."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI. Host is lower-cased; user keeps its escapes as received."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def bare_host(self) -> str:
        """The host without IPv6 brackets, as sockets want it."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def address_of_record(self) -> str:
        return f"{self.user}@{self.host}" if self.user is not None else self.host

    def unescaped_user(self) -> str | None:
        if self.user is None:
            return None
        return unquote_to_bytes(self.user).decode("utf-8", "replace")

    def with_params(self, **params: str | None) -> SipUri:
        merged = dict(self.params)
        merged.update(params)
        return replace(self, params=merged)

    def without_headers(self) -> SipUri:
        return replace(self, headers={})

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(format_host(self.host))
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """Any other scheme (tel:, urn:, im:, …): kept opaque so we can answer 416 about it."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | AbsoluteUri


# Parsed values are frozen and a message's headers are read many times on its way through the
# stack (transaction keys, dialog ids, validation), so the pure parsers remember recent inputs.
_PARSE_CACHE = 4096


@functools.lru_cache(maxsize=_PARSE_CACHE)
def parse_uri(text: str) -> Uri:
    """Parse a URI; whitespace anywhere inside is an error (RFC 4475 §3.1.2.8, §3.1.2.14)."""
    if not text or _URI_FORBIDDEN_RE.search(text) is not None:
        raise SipError(400, f"bad URI {text!r}")
    scheme, colon, rest = text.partition(":")
    if not colon or _SCHEME_RE.fullmatch(scheme) is None or not rest:
        raise SipError(400, f"bad URI {text!r}")
    lower = scheme.lower()
    if lower not in ("sip", "sips"):
        return AbsoluteUri(lower, rest)
    return _parse_sip_uri(lower, rest)


def _parse_sip_uri(scheme: str, rest: str) -> SipUri:
    # The user part may hold ';', '?' and '/' unescaped (RFC 3261 §25.1 user-unreserved) but
    # never '@', so the first '@' ends it. Cutting there (not at the last '@') also reads the
    # unescaped '@' some peers leave in a header value (``?Replaces=id@host``) as part of that
    # value instead of swallowing host and headers into the user part.
    user: str | None = None
    password: str | None = None
    if "@" in rest:
        userinfo, _, rest = rest.partition("@")
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
        if not user:
            raise SipError(400, "empty user in URI")
    rest, _, header_text = rest.partition("?")
    hostport, semi, param_text = rest.partition(";")
    host, port = split_host_port(hostport)
    params = parse_params(param_text) if semi else {}
    headers: dict[str, str] = {}
    if header_text:
        for pair in header_text.split("&"):
            name, _, value = pair.partition("=")
            if not name:
                raise SipError(400, "bad URI header")
            headers[name] = value
    return SipUri(
        host=host.lower(),
        user=user,
        password=password,
        port=port,
        scheme=scheme,
        params=params,
        headers=headers,
    )


@dataclass(frozen=True, slots=True)
class NameAddr:
    """``"Display" <uri>;params`` as in From, To, Contact, Route (RFC 3261 §20.10)."""

    uri: Uri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        params = dict(self.params)
        params["tag"] = tag
        return NameAddr(self.uri, self.display_name, params)  # not replace(): 3x the cost

    def __str__(self) -> str:
        display = ""
        if self.display_name is not None:
            display = f"{quote_string(self.display_name)} "
        return f"{display}<{self.uri}>{format_params(self.params)}"


def quote_string(text: str) -> str:
    """A quoted-string holding ``text`` (RFC 3261 §25.1).

    Backslash, quote and control characters go out as quoted-pairs; CR and LF cannot be quoted
    at all, so they become spaces rather than break the header line.
    """
    out = ['"']
    for char in text:
        if char in "\r\n":
            out.append(" ")
        elif char in '\\"' or ord(char) < 0x20 or ord(char) == 0x7F:
            out.append("\\" + char)
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


@functools.lru_cache(maxsize=_PARSE_CACHE)
def parse_name_addr(text: str) -> NameAddr:
    """Parse name-addr or addr-spec with header parameters.

    Without angle brackets, parameters after ``;`` belong to the header, not the URI
    (RFC 3261 §20.10), and a URI with ``,``, ``?`` or ``;`` must be bracketed.
    """
    text = text.strip(_WS)
    if not text:
        raise SipError(400, "empty name-addr")
    display: str | None = None
    if text.startswith('"'):
        end = _closing_quote(text)
        display = _unquote(text[1:end])
        text = text[end + 1 :].lstrip(_WS)
        if not text.startswith("<"):
            raise SipError(400, "display name without <uri>")
    elif "<" in text:
        before, _, after = text.partition("<")
        token_display = before.strip(_WS)
        if token_display:
            words = re.split(r"[ \t]+", token_display)
            for word in words:
                if not is_token(word):
                    raise SipError(400, f"bad display name {token_display!r}")
            display = " ".join(words)
        text = "<" + after
    if text.startswith("<"):
        close = text.find(">")
        if close < 0:
            raise SipError(400, "unterminated <uri>")
        uri = parse_uri(text[1:close])
        tail = text[close + 1 :].strip(_WS)
        if tail and not tail.startswith(";"):
            raise SipError(400, "junk after <uri>")
        return NameAddr(uri, display, parse_params(tail))
    uri_text, semi, param_text = text.partition(";")
    uri = parse_uri(uri_text.strip(_WS))
    if isinstance(uri, SipUri) and uri.headers:
        raise SipError(400, "addr-spec with headers must use <>")
    return NameAddr(uri, None, parse_params(param_text) if semi else {})


def _closing_quote(text: str) -> int:
    end = text.find('"', 1)
    if end > 0 and text.find("\\", 1, end) < 0:
        return end  # no quoted-pair before the first quote: it closes (the usual case)
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == '"':
            return index
        index += 1
    raise SipError(400, "unterminated quoted string")


def _unquote(text: str) -> str:
    if "\\" not in text:
        return text
    return re.sub(r"\\(.)", r"\1", text)


def split_header_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas in quotes and <…> (§7.3)."""
    return list(_split_header_list(value))


@functools.lru_cache(maxsize=_PARSE_CACHE)
def _split_header_list(value: str) -> tuple[str, ...]:
    """Split a comma-separated header value, ignoring commas in quotes and <…> (RFC 3261 §7.3)."""
    if '"' not in value:
        # The common cases without a character-by-character walk: one value, or values with
        # no <…> around a comma.
        if "," not in value:
            part = value.strip(_WS)
            return (part,) if part else ()
        if "<" not in value:
            return tuple(p for p in (x.strip(_WS) for x in value.split(",")) if p)
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    angle = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"' and not angle:
            quoted = not quoted
        elif char == "<" and not quoted:
            angle = True
        elif char == ">" and not quoted:
            angle = False
        elif char == "," and not quoted and not angle:
            parts.append("".join(current).strip(_WS))
            current = []
            continue
        current.append(char)
    if quoted:
        raise SipError(400, "unterminated quoted string")
    parts.append("".join(current).strip(_WS))
    return tuple(p for p in parts if p)
