"""Read Chorus's SIP trace (`[server] trace_sip`): what crossed which socket, in order.

Each entry is a line `DATE TIME recv <- tls:127.0.0.1:40600 (854 bytes)` (or `send ->`)
followed by the message as it was on the wire. Tests use it to say which hop carried what:
the transport a request came in on, the Via a proxy put on top, the Contact we answered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["TracedMessage", "call_messages", "audio_profile", "invite_answer", "parse_trace"]

_ENTRY = re.compile(
    r"^\S+ \S+ (?P<direction>recv <-|send ->) (?P<transport>[a-z]+):(?P<peer>\S+) "
    r"\(\d+ bytes\)\n(?P<message>.*?)(?=^\S+ \S+ (?:recv <-|send ->) |\Z)",
    re.M | re.S,
)


@dataclass(frozen=True, slots=True)
class TracedMessage:
    received: bool
    transport: str  # of the socket: udp, tcp or tls
    peer: str  # host:port of the far end
    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: str

    @property
    def method(self) -> str | None:
        """The request's method, or None for a response."""
        first = self.start_line.split(" ", 1)[0]
        return None if first.startswith("SIP/") else first

    @property
    def status(self) -> int | None:
        parts = self.start_line.split(" ", 2)
        return int(parts[1]) if parts[0].startswith("SIP/") and len(parts) > 1 else None

    @property
    def cseq_method(self) -> str:
        return self.header("CSeq").rsplit(" ", 1)[-1]

    def headers_named(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def header(self, name: str) -> str:
        """The first header called `name` (long form), or '' when there is none."""
        values = self.headers_named(name)
        return values[0] if values else ""

    def via_transports(self) -> list[str]:
        """The transport of every Via value, top first (`SIP/2.0/TLS host` -> `tls`)."""
        found = []
        for header in self.headers_named("Via"):
            for value in header.split(","):
                protocol = value.strip().split(" ", 1)[0]
                found.append(protocol.rsplit("/", 1)[-1].lower())
        return found


def parse_trace(text: str) -> list[TracedMessage]:
    """Every message in a trace, in order."""
    messages = []
    for entry in _ENTRY.finditer(text.replace("\r\n", "\n")):
        head, _, body = entry["message"].partition("\n\n")
        lines = head.splitlines()
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        messages.append(
            TracedMessage(
                received=entry["direction"] == "recv <-",
                transport=entry["transport"],
                peer=entry["peer"],
                start_line=lines[0] if lines else "",
                headers=tuple(headers),
                body=body.strip(),
            )
        )
    return messages


def call_messages(trace: str, call_id: str) -> list[TracedMessage]:
    """The messages of one call (by Call-ID), in order."""
    return [m for m in parse_trace(trace) if m.header("Call-ID") == call_id]


def invite_answer(messages: list[TracedMessage]) -> TracedMessage:
    """The first 200 to the first INVITE among `messages` (one call's)."""
    for message in messages:
        if message.status == 200 and message.cseq_method == "INVITE":
            return message
    raise AssertionError(f"no 200 to INVITE among {[m.start_line for m in messages]}")


def audio_profile(answer: TracedMessage) -> str:
    """The transport protocol of the first audio m-line (`RTP/AVP`, `RTP/SAVP`, ...)."""
    for line in answer.body.splitlines():
        if line.startswith("m=audio "):
            return line.split()[2]
    raise AssertionError(f"no audio m-line in {answer.body!r}")
