"""An XMPP client on aioxmpp (Debian ``python3-aioxmpp``): an XMPP stack of its own (its own
XML stream, STARTTLS, SASL, stanza model), not slixmpp, so the gateway is checked against a
second implementation's reading of the same XEPs.

Debian's package is for the system Python (``/usr/bin/python3``) with the lxml it was built
against (aioxmpp 0.13 wants lxml 4, the venv has lxml 6), so this file runs as a child
process of that interpreter and never inside the test's venv. The test drives it with JSON
lines:

    python3 aioxmpp_peer.py JID PASSWORD HOST PORT

stdin, one command a line::

    {"op": "send", "to": JID, "id": ID, "body": TEXT?, "state": "composing"?,
     "request": true?, "received": ID?}
    {"op": "error", "to": JID, "id": ID, "condition": "item-not-found"}
    {"op": "quit"}

stdout, one event a line: ``{"event": "up"}`` once the session is up (available presence
sent), ``{"event": "sent", "id": ID}`` after each command, and for every message stanza
that reaches the client ``{"event": "message", "from", "type", "id", "body", "state",
"request", "received", "error"}`` (absent parts null).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aioxmpp  # type: ignore[import-not-found]
import aioxmpp.chatstates.xso  # type: ignore[import-not-found]  # registers Message.xep0085_*
import aioxmpp.mdr.xso  # type: ignore[import-not-found]  # registers Message.xep0184_*


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def describe(message: Any) -> dict[str, Any]:
    """The parts of a message stanza the test asserts on, as aioxmpp parsed them."""
    body = message.body.any() if message.body else None
    state = message.xep0085_chatstate
    received = message.xep0184_received
    error = None
    if message.error is not None:
        error = message.error.condition.value[1]  # (namespace, local name)
    return {
        "event": "message",
        "from": str(message.from_) if message.from_ is not None else None,
        "type": message.type_.value,
        "id": message.id_,
        "body": body,
        "state": state.value[1] if state is not None else None,
        "request": bool(message.xep0184_request_receipt),
        "received": received.message_id if received is not None else None,
        "error": error,
    }


def stanza(command: dict[str, Any]) -> Any:
    to = aioxmpp.JID.fromstr(command["to"])
    if command["op"] == "error":
        message = aioxmpp.Message(type_=aioxmpp.MessageType.ERROR, to=to, id_=command["id"])
        condition = next(c for c in aioxmpp.ErrorCondition if c.value[1] == command["condition"])
        message.error = aioxmpp.stanza.Error(condition=condition)
        return message
    message = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=to, id_=command["id"])
    if command.get("body") is not None:
        message.body[None] = command["body"]
    if command.get("state"):
        message.xep0085_chatstate = aioxmpp.chatstates.xso.ChatState(
            (aioxmpp.chatstates.xso.namespaces.xep0085, command["state"])
        )
    if command.get("request"):
        message.xep0184_request_receipt = True
    if command.get("received"):
        message.xep0184_received = aioxmpp.mdr.xso.Received(command["received"])
    return message


async def main(jid: str, password: str, host: str, port: int) -> None:
    client = aioxmpp.PresenceManagedClient(
        aioxmpp.JID.fromstr(jid),
        aioxmpp.make_security_layer(password, no_verify=True),  # the test's self-signed cert
        override_peer=[(host, port, aioxmpp.connector.STARTTLSConnector())],
    )
    client.presence = aioxmpp.PresenceState(available=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with client.connected() as stream:
        stream.on_message_received.connect(lambda message: emit(describe(message)))
        emit({"event": "up"})
        while line := await reader.readline():
            command = json.loads(line)
            if command["op"] == "quit":
                break
            await client.send(stanza(command))
            emit({"event": "sent", "id": command["id"]})


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
