"""Echo's chat: every MSRP message goes back to its sender, same content type.

A message/cpim message (RFC 3862) is re-addressed on the way back: From becomes the echo
service and To the original sender, every other header (DateTime, NS, IMDN …) and the wrapped
content unchanged. Success REPORTs the sender asked for come from the MSRP core when the message
is complete (RFC 4975 §7.1.2). A message echo cannot use is refused before its last chunk is
answered: 400 for a malformed CPIM wrapper, 415 for a wrapped type outside
a=accept-wrapped-types (RFC 4975 §7.3.1, §8.6).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from control.msrp.cpim import (
    CPIM_CONTENT_TYPE,
    CpimAddress,
    CpimHeader,
    CpimMessage,
    check_content_type,
    parse_cpim,
)
from control.msrp.errors import MsrpError
from control.msrp.events import ConnectionFailed, MessageReceived
from control.msrp.sdp import MsrpMedia, Setup
from control.msrp.transport import MsrpChannel, MsrpConnectError

log = logging.getLogger("chorus.echo.chat")


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class CpimValidator:
    """Checks a complete message before it is answered (see the module doc)."""

    def __init__(self, wrapped_types: Sequence[str]) -> None:
        self.wrapped_types = tuple(wrapped_types) or ("*",)

    def __call__(self, content_type: str | None, body: bytes) -> None:
        if _media_type(content_type) == CPIM_CONTENT_TYPE:
            check_content_type(parse_cpim(body), self.wrapped_types)


def readdress(body: bytes, service: CpimAddress, sender: CpimAddress) -> bytes:
    """The CPIM message with From = ``service`` and To = its original From (or ``sender``)."""
    message = parse_cpim(body)
    original = message.sender or sender
    headers: list[CpimHeader] = []
    placed = False
    for header in message.headers:
        name = header.name.lower()
        if name in ("from", "to", "cc"):
            if not placed:
                headers += [CpimHeader("From", str(service)), CpimHeader("To", str(original))]
                placed = True
            continue
        headers.append(header)
    if not placed:
        headers[:0] = [CpimHeader("From", str(service)), CpimHeader("To", str(original))]
    return CpimMessage(tuple(headers), message.content_headers, message.body).serialize()


class EchoChat:
    """One chat stream of an echo call, on its own MSRP session."""

    def __init__(
        self,
        channel: MsrpChannel,
        offered: MsrpMedia,
        setup: Setup | None,
        *,
        service: CpimAddress,
        caller: CpimAddress,
    ) -> None:
        self.channel = channel
        self.offered = offered
        self.setup = setup
        self.service = service
        self.caller = caller
        self.echoed = 0
        self.started = False

    def fits(self, offered: MsrpMedia, setup: Setup | None) -> bool:
        """A re-offer that keeps this stream as it is (same peer path, same roles)."""
        return (
            not self.channel.closed
            and offered.path == self.offered.path
            and offered.secure == self.offered.secure
            and setup == self.setup
        )

    async def run(self) -> str:
        """Echo until the session closes; returns why it ended."""
        try:
            await self.channel.wait_connected()
        except MsrpConnectError as exc:
            log.info("echo chat %s did not connect: %s", self.channel.session_id, exc)
            return "not connected"
        while True:
            event = await self.channel.next_event()
            match event:
                case MessageReceived():
                    try:
                        self._echo(event)
                    except (MsrpError, MsrpConnectError) as exc:
                        log.info("echo chat %s: %s", self.channel.session_id, exc)
                    await self.channel.drain()
                case ConnectionFailed(reason=reason):
                    return reason
                case _:
                    pass  # responses and REPORTs about what we sent: nothing to do

    def _echo(self, event: MessageReceived) -> None:
        body = event.body or b""
        content_type = event.content_type or "text/plain"
        if _media_type(content_type) == CPIM_CONTENT_TYPE:
            body = readdress(body, self.service, self.caller)
        self.channel.send_message(content_type, body)
        self.echoed += 1

    def close(self) -> None:
        self.channel.close()
