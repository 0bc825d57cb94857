"""A MUC occupant on aioxmpp's own MUC client (``aioxmpp.MUCClient``, Debian
``python3-aioxmpp``): XEP-0045 as a second implementation reads it — its join (which waits
for the room's self-presence, status 110), its occupant roster built from the room's
presences, its groupchat handling. Run by the system Python, as tests/peers/aioxmpp_peer.py
is (the same reasons), driven with JSON lines:

    python3 aioxmpp_muc.py JID PASSWORD HOST PORT ROOM NICK

stdin: ``{"op": "say", "body": TEXT}``, ``{"op": "quit"}``. stdout: ``{"event": "joined",
"members": [nick, ...]}`` once aioxmpp says the join is done, then ``{"event": "message",
"nick": NICK, "body": TEXT}`` for each groupchat message, ``{"event": "join"|"leave",
"nick": NICK}`` for occupants coming and going, ``{"event": "said"}`` after each say.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aioxmpp  # type: ignore[import-not-found]
import aioxmpp.muc  # type: ignore[import-not-found]


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def main(jid: str, password: str, host: str, port: int, room: str, nick: str) -> None:
    client = aioxmpp.PresenceManagedClient(
        aioxmpp.JID.fromstr(jid),
        aioxmpp.make_security_layer(password, no_verify=True),  # the test's self-signed cert
        override_peer=[(host, port, aioxmpp.connector.STARTTLSConnector())],
    )
    client.presence = aioxmpp.PresenceState(available=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with client.connected():
        muc = client.summon(aioxmpp.MUCClient)
        joined, done = muc.join(aioxmpp.JID.fromstr(room), nick)

        def message(message: Any, member: Any, source: Any, **kwargs: Any) -> None:
            body = message.body.any() if message.body else None
            emit({"event": "message", "nick": member.nick if member else None, "body": body})

        joined.on_message.connect(message)
        joined.on_join.connect(lambda member, **kw: emit({"event": "join", "nick": member.nick}))
        joined.on_leave.connect(lambda member, **kw: emit({"event": "leave", "nick": member.nick}))
        await asyncio.wait_for(done, 60)
        emit({"event": "joined", "members": sorted(m.nick for m in joined.members)})
        while line := await reader.readline():
            command = json.loads(line)
            if command["op"] == "quit":
                break
            said = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT, to=joined.jid)
            said.body[None] = command["body"]
            await client.send(said)
            emit({"event": "said"})


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(args[0], args[1], args[2], int(args[3]), args[4], args[5]))
