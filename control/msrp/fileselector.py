"""The SDP attributes of MSRP file transfer (RFC 5547 §6, grammar in §10), parsed strictly.

An MSRP m-line becomes a file transfer when it carries ``a=file-selector``. A ``sendonly`` offer
pushes the described file, a ``recvonly`` offer pulls one the answerer has (§8). The other
attributes qualify the transfer: ``a=file-transfer-id`` tells a new transfer from a refreshed
offer of the same one (§8.1), ``a=file-disposition`` says what to do with it, ``a=file-date``
carries its dates and ``a=file-range`` asks for a part of it (§8.9).

Everything here is text in, values out; a value that does not follow the grammar raises
:class:`FileSelectorError`, an :class:`~control.sip.sdp.SdpError` carrying 488 (RFC 3261
§21.4.26: the offer's media description is not acceptable), so a caller rejects the offer with
the status the exception carries. Nothing here touches a file: the name a peer gives is only
ever metadata, never a path.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import re
import string
from dataclasses import dataclass

from control.sip.sdp import Attribute, MediaDescription, SdpError

__all__ = [
    "HASH_SHA1",
    "FileDate",
    "FileRange",
    "FileSelector",
    "FileSelectorError",
    "FileTransferOffer",
    "file_transfer_attributes",
    "format_file_date",
    "format_file_range",
    "format_file_selector",
    "parse_file_date",
    "parse_file_range",
    "parse_file_selector",
    "parse_file_transfer",
    "parse_token",
    "selector_for",
]

HASH_SHA1 = "sha-1"
"""The one algorithm RFC 5547 §6 names (IANA "Hash Function Textual Names")."""

MAX_ATTRIBUTE_LENGTH = 56 * 1024
"""Longest attribute value read: room for the longest name below, percent-encoded, and
still inside a SIP message of the default ``[sip] max_message_bytes`` (64 KiB)."""

MAX_NAME_LENGTH = 16384
"""Longest decoded file name kept (characters). A name is metadata only, never a path (the
spool names files by hash), so a 10 KB name is stored as sent; beyond this it is refused."""

MAX_SIZE_DIGITS = 19
"""A size or offset above 10**19 is no file anyone sends (and no int64 either)."""

# RFC 4566 §9 token-char: the characters of a token (used by transfer ids, dispositions, types).
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`{|}~")
_HASH_VALUE = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*\Z")
_HASH_LENGTHS = {HASH_SHA1: 20}


class FileSelectorError(SdpError):
    """A file-transfer attribute that breaks RFC 5547 §10; the offer is answered 488."""

    def __init__(self, reason: str) -> None:
        super().__init__(488, reason)


# ---- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileSelector:
    """``a=file-selector`` (RFC 5547 §5, §6): what describes (or selects) one file.

    In a push it describes the file on offer; in a pull it selects a file the answerer holds,
    and any of its parts may be left out (§5: the answerer matches on what is given). ``type``
    is the full media type with its parameters; ``hashes`` maps algorithm names (lower case)
    to digests.
    """

    name: str | None = None
    type: str | None = None
    size: int | None = None
    hashes: tuple[tuple[str, bytes], ...] = ()

    @property
    def sha1(self) -> bytes | None:
        return dict(self.hashes).get(HASH_SHA1)

    @property
    def sha1_hex(self) -> str | None:
        digest = self.sha1
        return digest.hex() if digest is not None else None

    @property
    def is_empty(self) -> bool:
        return self.name is None and self.type is None and self.size is None and not self.hashes

    def matches(self, name: str, content_type: str, size: int, sha1: bytes) -> bool:
        """Whether a stored file fits every part this selector gives (RFC 5547 §5)."""
        if self.name is not None and self.name != name:
            return False
        if self.type is not None and _media(self.type) != _media(content_type):
            return False
        if self.size is not None and self.size != size:
            return False
        return not (self.sha1 is not None and self.sha1 != sha1)


@dataclass(frozen=True, slots=True)
class FileRange:
    """``a=file-range`` (RFC 5547 §6): 1-based, inclusive; ``stop`` None is ``*`` (to the end)."""

    start: int
    stop: int | None

    @property
    def offset(self) -> int:
        """0-based offset of the first byte."""
        return self.start - 1

    def length(self, size: int) -> int:
        """Bytes this range covers of a file of ``size`` bytes."""
        end = size if self.stop is None else min(self.stop, size)
        return max(0, end - self.offset)


@dataclass(frozen=True, slots=True)
class FileDate:
    """``a=file-date`` (RFC 5547 §6): any of creation, modification and read dates."""

    creation: _dt.datetime | None = None
    modification: _dt.datetime | None = None
    read: _dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class FileTransferOffer:
    """Every file-transfer attribute of one MSRP m-line."""

    selector: FileSelector
    transfer_id: str | None = None
    disposition: str | None = None
    date: FileDate | None = None
    range: FileRange | None = None
    icon: str | None = None


# ---- file-selector ------------------------------------------------------------------------


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _check_length(value: str, what: str) -> None:
    if len(value) > MAX_ATTRIBUTE_LENGTH:
        raise FileSelectorError(f"a={what} longer than {MAX_ATTRIBUTE_LENGTH} characters")


def _integer(text: str, what: str) -> int:
    """RFC 4566 ``integer``: a digit string with no sign and no leading zero (but ``0``)."""
    if (
        not text
        or not text.isascii()
        or not text.isdigit()
        or len(text) > MAX_SIZE_DIGITS
        or (len(text) > 1 and text[0] == "0")
    ):
        raise FileSelectorError(f"bad {what} {text[:24]!r}")
    return int(text)


def _is_token(text: str) -> bool:
    return bool(text) and all(c in _TOKEN_CHARS for c in text)


def parse_token(value: str, what: str) -> str:
    """A bare token attribute value (``a=file-transfer-id``, ``a=file-disposition``)."""
    _check_length(value, what)
    text = value.strip(" ")
    if not _is_token(text):
        raise FileSelectorError(f"a={what} is not a token: {text[:40]!r}")
    return text


def _quoted(text: str, pos: int, what: str) -> tuple[str, int]:
    """The DQUOTE-delimited string starting at ``text[pos]``; returns it and the next index."""
    if pos >= len(text) or text[pos] != '"':
        raise FileSelectorError(f"{what} must be in double quotes")
    end = text.find('"', pos + 1)
    if end < 0:
        raise FileSelectorError(f"unterminated quoted {what}")
    return text[pos + 1 : end], end + 1


def _decode_name(raw: str) -> str:
    """RFC 5547 §10 ``filename-string``: any character but NUL, CR, LF, DQUOTE and ``%``, which
    travel percent-encoded (a decoded name may hold any of them); the bytes are UTF-8 (the SDP
    charset, RFC 4566 §5)."""
    if not raw:
        raise FileSelectorError("empty file name")
    if any(c in "\0\r\n" for c in raw):
        raise FileSelectorError("file name with a control character")
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "%":
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or not all(h in string.hexdigits for h in pair):
                raise FileSelectorError("bad percent-encoding in the file name")
            out.append(int(pair, 16))
            i += 3
        else:
            out += c.encode("utf-8", "surrogateescape")
            i += 1
    try:
        name = out.decode("utf-8")
    except UnicodeDecodeError:
        raise FileSelectorError("file name is not UTF-8") from None
    # A percent-encoded NUL is valid RFC 5547 §10 syntax; the name is metadata, kept as sent
    # and cleaned wherever it is shown (notices, downloads), so it is not refused here.
    if len(name) > MAX_NAME_LENGTH:
        raise FileSelectorError(f"file name longer than {MAX_NAME_LENGTH} characters")
    return name


def _encode_name(name: str) -> str:
    out = []
    for c in name:
        out.append(f"%{ord(c):02X}" if c in '\0\r\n"%' else c)
    return "".join(out)


def _parse_type(text: str, pos: int) -> tuple[str, int]:
    """``type:`` type "/" subtype *(";" attribute "=" DQUOTE value DQUOTE) (RFC 5547 §10)."""
    end = pos
    while end < len(text) and text[end] in _TOKEN_CHARS:
        end += 1
    major = text[pos:end]
    if end >= len(text) or text[end] != "/" or not major:
        raise FileSelectorError("type selector needs type/subtype")
    sub_start = end + 1
    end = sub_start
    while end < len(text) and text[end] in _TOKEN_CHARS:
        end += 1
    if end == sub_start:
        raise FileSelectorError("type selector needs type/subtype")
    while end < len(text) and text[end] == ";":
        name_start = end + 1
        end = name_start
        while end < len(text) and text[end] in _TOKEN_CHARS:
            end += 1
        if end == name_start or end >= len(text) or text[end] != "=":
            raise FileSelectorError("bad type parameter")
        value, end = _quoted(text, end + 1, "type parameter value")
        if any(c in "\0\r\n" for c in value):
            raise FileSelectorError("type parameter with a control character")
    return text[pos:end], end


def _parse_hash(text: str, pos: int) -> tuple[tuple[str, bytes], int]:
    """``hash:`` algorithm ":" 2HEXDIG *(":" 2HEXDIG) (RFC 5547 §10)."""
    colon = text.find(":", pos)
    if colon < 0:
        raise FileSelectorError("hash selector needs algorithm:value")
    algorithm = text[pos:colon].lower()
    if not _is_token(algorithm):
        raise FileSelectorError("bad hash algorithm")
    end = text.find(" ", colon + 1)
    end = len(text) if end < 0 else end
    value = text[colon + 1 : end]
    if not _HASH_VALUE.match(value):
        raise FileSelectorError("hash value must be colon-separated hex pairs")
    digest = bytes.fromhex(value.replace(":", ""))
    expected = _HASH_LENGTHS.get(algorithm)
    if expected is not None and len(digest) != expected:
        raise FileSelectorError(f"{algorithm} digest must be {expected} bytes")
    return (algorithm, digest), end


def parse_file_selector(value: str | None) -> FileSelector:
    """Parse an ``a=file-selector`` value (``None``/empty: the attribute with no selectors).

    Each selector kind may appear once (``hash`` once per algorithm); an unknown selector is a
    488, as is a size or name that does not fit the grammar.
    """
    if value is None:
        return FileSelector()
    _check_length(value, "file-selector")
    text = value.strip(" ")
    name: str | None = None
    ftype: str | None = None
    size: int | None = None
    hashes: dict[str, bytes] = {}
    seen: set[str] = set()
    pos = 0
    while pos < len(text):
        if text[pos] == " ":
            pos += 1
            continue
        colon = text.find(":", pos)
        if colon < 0:
            raise FileSelectorError(f"selector without a value at {text[pos : pos + 20]!r}")
        kind = text[pos:colon].lower()
        pos = colon + 1
        if kind in seen and kind != "hash":
            raise FileSelectorError(f"{kind} selector given twice")
        seen.add(kind)
        if kind == "name":
            raw, pos = _quoted(text, pos, "file name")
            name = _decode_name(raw)
        elif kind == "type":
            ftype, pos = _parse_type(text, pos)
        elif kind == "size":
            end = text.find(" ", pos)
            end = len(text) if end < 0 else end
            size = _integer(text[pos:end], "file size")
            pos = end
        elif kind == "hash":
            (algorithm, digest), pos = _parse_hash(text, pos)
            if algorithm in hashes:
                raise FileSelectorError(f"{algorithm} hash given twice")
            hashes[algorithm] = digest
        else:
            raise FileSelectorError(f"unknown file selector {kind[:20]!r}")
        if pos < len(text) and text[pos] != " ":
            raise FileSelectorError(f"selectors must be separated by spaces ({kind})")
    return FileSelector(name, ftype, size, tuple(hashes.items()))


def format_file_selector(selector: FileSelector) -> str:
    """The attribute value, in the order of RFC 5547's examples (name, type, size, hash)."""
    parts = []
    if selector.name is not None:
        parts.append(f'name:"{_encode_name(selector.name)}"')
    if selector.type is not None:
        parts.append(f"type:{selector.type}")
    if selector.size is not None:
        parts.append(f"size:{selector.size}")
    for algorithm, digest in selector.hashes:
        parts.append(f"hash:{algorithm}:{digest.hex(':').upper()}")
    return " ".join(parts)


# ---- file-range, file-date ----------------------------------------------------------------


def parse_file_range(value: str) -> FileRange:
    """``a=file-range:`` start "-" (stop / "*"), 1-based and inclusive (RFC 5547 §6)."""
    _check_length(value, "file-range")
    start_text, sep, stop_text = value.strip(" ").partition("-")
    if not sep:
        raise FileSelectorError("a=file-range needs start-stop")
    start = _integer(start_text, "file-range start")
    if start < 1:
        raise FileSelectorError("a=file-range starts at 1")
    if stop_text == "*":
        return FileRange(start, None)
    stop = _integer(stop_text, "file-range stop")
    if stop < start:
        raise FileSelectorError("a=file-range stop before start")
    return FileRange(start, stop)


def format_file_range(file_range: FileRange) -> str:
    stop = "*" if file_range.stop is None else str(file_range.stop)
    return f"{file_range.start}-{stop}"


def parse_file_date(value: str) -> FileDate:
    """``a=file-date:`` with ``creation:``, ``modification:``, ``read:`` quoted RFC 5322
    date-times (RFC 5547 §6), each at most once."""
    _check_length(value, "file-date")
    text = value.strip(" ")
    dates: dict[str, _dt.datetime] = {}
    pos = 0
    while pos < len(text):
        if text[pos] == " ":
            pos += 1
            continue
        colon = text.find(":", pos)
        if colon < 0:
            raise FileSelectorError("a=file-date parameter without a value")
        kind = text[pos:colon].lower()
        if kind not in ("creation", "modification", "read"):
            raise FileSelectorError(f"unknown a=file-date parameter {kind[:20]!r}")
        if kind in dates:
            raise FileSelectorError(f"a=file-date {kind} given twice")
        raw, pos = _quoted(text, colon + 1, f"{kind} date")
        try:
            dates[kind] = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            raise FileSelectorError(f"bad {kind} date {raw[:40]!r}") from None
        if pos < len(text) and text[pos] != " ":
            raise FileSelectorError("a=file-date parameters must be separated by spaces")
    if not dates:
        raise FileSelectorError("empty a=file-date")
    return FileDate(dates.get("creation"), dates.get("modification"), dates.get("read"))


def format_file_date(date: FileDate) -> str:
    parts = []
    for kind, when in (
        ("creation", date.creation),
        ("modification", date.modification),
        ("read", date.read),
    ):
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=_dt.UTC)
            parts.append(f'{kind}:"{email.utils.format_datetime(when)}"')
    return " ".join(parts)


# ---- the m-line ---------------------------------------------------------------------------


def parse_file_transfer(media: MediaDescription) -> FileTransferOffer | None:
    """The file-transfer attributes of an MSRP m-line; ``None`` without ``a=file-selector``
    (a chat stream). Any malformed one raises :class:`FileSelectorError` (488)."""
    if not media.has("file-selector"):
        return None
    if len(media.get_all("file-selector")) > 1:
        raise FileSelectorError("more than one a=file-selector")
    selector = parse_file_selector(media.get("file-selector"))
    transfer_id = media.get("file-transfer-id")
    disposition = media.get("file-disposition")
    date = media.get("file-date")
    file_range = media.get("file-range")
    icon = media.get("file-icon")
    if icon is not None:
        _check_length(icon, "file-icon")
        if not icon.lower().startswith("cid:"):
            raise FileSelectorError("a=file-icon must be a cid: URL")
    return FileTransferOffer(
        selector=selector,
        transfer_id=parse_token(transfer_id, "file-transfer-id")
        if transfer_id is not None
        else None,
        disposition=parse_token(disposition, "file-disposition").lower()
        if disposition is not None
        else None,
        date=parse_file_date(date) if date is not None else None,
        range=parse_file_range(file_range) if file_range is not None else None,
        icon=icon,
    )


def file_transfer_attributes(
    selector: FileSelector,
    *,
    transfer_id: str | None = None,
    disposition: str | None = None,
    date: FileDate | None = None,
    file_range: FileRange | None = None,
) -> list[Attribute]:
    """The a= lines for an offer or answer (pass them as ``extra`` to the MSRP SDP helpers)."""
    attrs = [Attribute("file-selector", format_file_selector(selector))]
    if transfer_id is not None:
        attrs.append(Attribute("file-transfer-id", parse_token(transfer_id, "file-transfer-id")))
    if disposition is not None:
        attrs.append(Attribute("file-disposition", parse_token(disposition, "file-disposition")))
    if date is not None:
        attrs.append(Attribute("file-date", format_file_date(date)))
    if file_range is not None:
        attrs.append(Attribute("file-range", format_file_range(file_range)))
    return attrs


def selector_for(name: str, content_type: str, size: int, sha1: bytes) -> FileSelector:
    """A full selector for a file we have (the answer to a pull, or a push offer)."""
    return FileSelector(name, content_type, size, ((HASH_SHA1, sha1),))
