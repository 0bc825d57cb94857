"""Echo's chat: every MSRP message goes back to its sender, same content type.

A message/cpim message (RFC 3862) is re-addressed on the way back: From becomes the echo
service and To the original sender, every other header (DateTime, NS, IMDN …) and the wrapped
content unchanged. Success REPORTs the sender asked for come from the MSRP core when the message
is complete (RFC 4975 §7.1.2); the checks before that (400 malformed CPIM, 415 wrapped type)
are the stream layer's (:mod:`control.streams.chat`).
"""

from __future__ import annotations

import logging

from control.msrp.cpim import CPIM_CONTENT_TYPE, CpimAddress, CpimHeader, CpimMessage, parse_cpim
from control.msrp.errors import MsrpError
from control.msrp.events import ConnectionFailed, MessageReceived
from control.msrp.transport import MsrpConnectError
from control.streams.chat import MsrpChatStream, media_type

log = logging.getLogger("chorus.echo.chat")


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
    """What echo does with one chat stream: send every message back, re-addressed."""

    def __init__(
        self, stream: MsrpChatStream, *, service: CpimAddress, caller: CpimAddress
    ) -> None:
        self.stream = stream
        self.service = service
        self.caller = caller
        self.echoed = 0

    async def run(self) -> str:
        """Echo until the session closes; returns why it ended."""
        channel = self.stream.channel
        try:
            await channel.wait_connected()
        except MsrpConnectError as exc:
            log.info("echo chat %s did not connect: %s", channel.session_id, exc)
            return "not connected"
        while True:
            event = await channel.next_event()
            match event:
                case MessageReceived():
                    try:
                        self._echo(event)
                    except (MsrpError, MsrpConnectError) as exc:
                        log.info("echo chat %s: %s", channel.session_id, exc)
                    await channel.drain()
                case ConnectionFailed(reason=reason):
                    return reason
                case _:
                    pass  # responses and REPORTs about what we sent: nothing to do

    def _echo(self, event: MessageReceived) -> None:
        body = event.body or b""
        content_type = event.content_type or "text/plain"
        if media_type(content_type) == CPIM_CONTENT_TYPE:
            body = readdress(body, self.service, self.caller)
        self.stream.channel.send_message(content_type, body)
        self.echoed += 1
