"""A FAKE FreeSWITCH Event Socket: a protocol-level stand-in for mod_event_socket and the
parts of mod_conference Chorus drives. It is not FreeSWITCH and mixes no audio.

FreeSWITCH is not installable on this machine, so the engine's ESL side meets this fake. It
speaks the wire format of FreeSWITCH 1.10 byte for byte — ``auth/request`` on connect,
``command/reply`` with ``Reply-Text``, ``api/response`` with ``Content-Length``, events as
``text/event-plain`` with URL-encoded values — and builds its ``conference::maintenance``
events the way mod_conference 1.10 does (``conference_member_add_event_data``: the event's
core headers, the conference's, ``Floor``, the channel's basic data, the member flags, then
``Action``). Its api answers are mod_conference's (``OK mute 3\\n``, ``OK kicked 3\\n``,
``Energy 3 = 450\\n``, ``Non-Existant ID 9\\n``, the ``;``-separated ``list``).

The test plays FreeSWITCH's inside: ``join()`` stands for a SIP leg that the dialplan put into
a conference (conference-create, add-member), ``talk()`` for the energy detector. Any client
may run ``api conference R kick|mute|unmute N`` — the engine or an "operator" (`operator`) —
and every subscriber sees the events. Faults on demand: ``half_written`` events (each written
in two pieces with a pause between), ``cut_next_reply`` (half an api reply, then the
connection closes), ``stalled`` (reads commands, answers none), a wrong password (``-ERR
invalid`` and the connection closes), ``drop_connections()``, and a clean stop: ``shutdown()``
or any client's ``api fsctl shutdown`` (``+OK``, then SHUTDOWN, every member hung up with
SYSTEM_SHUTDOWN, disconnect notices, no more listening).

Run alone (for kill -9 tests): ``python -m tests.peers.eslfake --port P --password X``; it
prints ``ready`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import re
import time
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import formatdate

from control.media.freeswitch.esl import (
    EslEvent,
    EslParser,
    api_response_bytes,
    auth_request_bytes,
    command_bytes,
    command_reply_bytes,
    disconnect_notice_bytes,
    event_plain_bytes,
    parse_event_plain,
)

__all__ = ["FakeFreeSwitch", "FakeMember", "operator"]

CORE_UUID = "5e1d1d1e-0b5f-4c1a-9f00-c0ffee001110"
HOSTNAME = "fake-freeswitch"
STATUS = (
    "UP 0 years, 0 days, 0 hours, 1 minute, 2 seconds, 3 milliseconds, 4 microseconds\n"
    "FreeSWITCH (Version 1.10.12 -release 64bit) is ready\n"
    "3 session(s) since startup\n"
    "{sessions} session(s) - peak {sessions}, last 5min {sessions}\n"
    "0 session(s) per Sec out of max 30, peak 1, last 5min 1\n"
    "1000 session(s) max\n"
    "min idle cpu 0.00/97.00\n"
    "Current Stack Size/Max 240K/8192K\n"
)


@dataclass(slots=True)
class FakeMember:
    member_id: int
    caller_id_number: str
    caller_id_name: str
    uuid: str
    muted: bool = False
    deaf: bool = False
    talking: bool = False
    energy: int = 200  # the profile's energy-level (deploy/freeswitch conference.conf.xml)
    sip_headers: dict[str, str] = field(default_factory=dict)  # the INVITE's X- headers

    @property
    def channel_name(self) -> str:
        return f"sofia/chorus/{self.caller_id_number}@127.0.0.1"


@dataclass(slots=True)
class _Conference:
    name: str
    uuid: str
    members: dict[int, FakeMember] = field(default_factory=dict)
    floor: int | None = None


@dataclass(slots=True)
class _Client:
    writer: asyncio.StreamWriter
    authed: bool = False
    custom: set[str] = field(default_factory=set)
    events: set[str] = field(default_factory=set)
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # half-written, in order


class FakeFreeSwitch:
    """The fake Event Socket on ``host:port`` (``port=0`` picks one)."""

    def __init__(self, password: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.password = password
        self.host = host
        self.port = port
        self.commands: list[str] = []  # every command received, in order (auth included)
        self.half_written = False
        self.stalled = False
        self.cut_next_reply: str | None = None  # an api command prefix
        self.auth_failures = 0
        self.connections = 0
        self.emitted: list[bytes] = []  # every event as written, for sans-IO tests
        self._server: asyncio.Server | None = None
        self._clients: list[_Client] = []
        self._conferences: dict[str, _Conference] = {}
        self._ids = itertools.count(1)  # mod_conference: one id pool for all conferences
        self._sequence = itertools.count(4000)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> FakeFreeSwitch:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.drop_connections()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def subscribers(self) -> int:
        return sum(1 for c in self._clients if c.authed and c.custom)

    def drop_connections(self) -> None:
        for client in list(self._clients):
            client.writer.close()
        self._clients.clear()

    # --- FreeSWITCH's inside, played by the test --------------------------------------------

    def join(
        self,
        conference: str,
        caller_id_number: str,
        caller_id_name: str = "",
        *,
        sip_headers: dict[str, str] | None = None,
    ) -> int:
        """A call arrives in ``conference`` (created when it is new): its member id.

        ``sip_headers`` are the leg's X- headers, which sofia keeps as ``sip_h_<name>``
        channel variables; by default a Chorus leg's ``X-Chorus-Participant``, the
        caller-id number."""
        conf = self._conferences.get(conference)
        if conf is None:
            conf = _Conference(conference, str(uuidlib.uuid4()))
            self._conferences[conference] = conf
            self._emit_conference(conf, "conference-create")
        member = FakeMember(
            next(self._ids),
            caller_id_number,
            caller_id_name or caller_id_number,
            str(uuidlib.uuid4()),
            sip_headers=(
                {"X-Chorus-Participant": caller_id_number} if sip_headers is None else sip_headers
            ),
        )
        conf.members[member.member_id] = member
        if conf.floor is None:
            conf.floor = member.member_id
        self._emit_member(conf, member, "add-member")
        return member.member_id

    def leave(self, conference: str, member_id: int, cause: str = "NORMAL_CLEARING") -> None:
        conf = self._conferences[conference]
        member = conf.members.pop(member_id)
        self._emit_member(conf, member, "del-member")
        self._emit_hangup(member, cause)
        if not conf.members:
            del self._conferences[conference]
            self._emit_conference(conf, "conference-destroy")

    def talk(self, conference: str, member_id: int, talking: bool) -> None:
        conf = self._conferences[conference]
        member = conf.members[member_id]
        member.talking = talking
        self._emit_member(conf, member, "start-talking" if talking else "stop-talking")

    def shutdown(self) -> None:
        """What FreeSWITCH 1.10 does once its runtime stops (``fsctl shutdown``, SIGTERM):
        ``switch_core_destroy`` fires SHUTDOWN (``Event-Info: System Shutting Down``), hangs
        every channel up with SYSTEM_SHUTDOWN (each member's del-member and
        CHANNEL_HANGUP_COMPLETE, the last one's conference-destroy), then unloads the
        modules: mod_event_socket sends each listener its disconnect notice, closes it and
        stops listening. The SIP side of those hang-ups (SIPp here) is the test's."""
        headers = self._core_headers("SHUTDOWN", "switch_core_destroy", 2913, "switch_core.c")
        headers.append(("Event-Info", "System Shutting Down"))
        self._broadcast("SHUTDOWN", "", headers)
        for conf in list(self._conferences.values()):
            for member_id in list(conf.members):
                self.leave(conf.name, member_id, cause="SYSTEM_SHUTDOWN")
        for client in list(self._clients):
            client.writer.write(disconnect_notice_bytes())
        self.drop_connections()
        if self._server is not None:
            self._server.close()

    def members(self, conference: str) -> list[FakeMember]:
        conf = self._conferences.get(conference)
        return list(conf.members.values()) if conf else []

    def conferences(self) -> list[str]:
        return list(self._conferences)

    # --- the socket -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer)
        self._clients.append(client)
        self.connections += 1
        buffer = b""
        try:
            writer.write(auth_request_bytes())
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                buffer += data
                while b"\n\n" in buffer:
                    raw, buffer = buffer.split(b"\n\n", 1)
                    command = raw.decode("utf-8", "replace").strip()
                    if command and not await self._command(client, command):
                        return
        except (ConnectionError, OSError):
            pass
        finally:
            if client in self._clients:
                self._clients.remove(client)
            writer.close()

    async def _command(self, client: _Client, command: str) -> bool:
        """Answer one command; False when the connection is to close."""
        self.commands.append(command)
        writer = client.writer
        if not client.authed:
            if command == f"auth {self.password}":
                client.authed = True
                writer.write(command_reply_bytes("+OK accepted"))
                return True
            # mod_event_socket: -ERR invalid, then the listener stops and closes.
            self.auth_failures += 1
            writer.write(command_reply_bytes("-ERR invalid"))
            await writer.drain()
            return False
        if self.stalled:
            return True
        if command.startswith("event plain"):
            self._subscribe(client, command.split()[2:])
            writer.write(command_reply_bytes("+OK event listener enabled plain"))
        elif command == "exit":
            writer.write(command_reply_bytes("+OK bye"))
            writer.write(disconnect_notice_bytes())
            await writer.drain()
            return False
        elif command.startswith("api "):
            reply = api_response_bytes(self._api(command[4:].strip()))
            cut = self.cut_next_reply
            if cut is not None and command[4:].startswith(cut):
                self.cut_next_reply = None
                writer.write(reply[: len(reply) - max(1, (len(reply) - 40) // 2)])
                await writer.drain()
                return False
            writer.write(reply)
        else:
            writer.write(command_reply_bytes("-ERR command not found"))
        await writer.drain()
        return True

    def _subscribe(self, client: _Client, words: Sequence[str]) -> None:
        custom = False
        for word in words:
            if word == "CUSTOM":
                custom = True
            elif custom and "::" in word:
                client.custom.add(word)
            else:
                client.events.add(word)

    def _api(self, command: str) -> str:
        words = command.split()
        if words[:1] == ["status"]:
            sessions = sum(len(c.members) for c in self._conferences.values())
            return STATUS.format(sessions=sessions)
        if words[:2] == ["fsctl", "shutdown"]:  # mod_commands ctl_function: +OK, then it goes
            if "cancel" not in words[2:]:
                asyncio.get_running_loop().call_soon(self.shutdown)
            return "+OK\n"
        if words[:1] != ["conference"] or len(words) < 3:
            return f"-ERR {words[0] if words else ''} Command not found!\n"
        conf = self._conferences.get(words[1])
        if conf is None:
            return f"Conference {words[1]} not found\n"
        verb = words[2]
        if verb == "list":
            return "".join(self._list_line(conf, m) for m in conf.members.values())
        target = words[3] if len(words) > 3 else ""
        member = conf.members.get(int(target)) if target.isdigit() else None
        if member is None:
            return f"Non-Existant ID {target or 0}\n"
        match verb:
            case "mute":
                member.muted, member.talking = True, False
                self._emit_member(conf, member, "mute-member")
                return f"OK mute {member.member_id}\n"
            case "unmute":
                member.muted = False
                self._emit_member(conf, member, "unmute-member")
                return f"OK unmute {member.member_id}\n"
            case "deaf" | "undeaf":
                member.deaf = verb == "deaf"
                self._emit_member(conf, member, f"{verb}-member")
                return f"OK {verb} {member.member_id}\n"
            case "energy":  # conference_api_sub_energy: a level, up/down by 200, or a query
                value = words[4] if len(words) > 4 else None
                if value is not None:
                    step = {"up": 200, "down": -200}.get(value.lower())
                    level = member.energy + step if step is not None else _atoi(value)
                    member.energy = min(max(level, 0), 1800) if step is not None else level
                    self._emit_member(conf, member, "energy-level-member")
                return f"Energy {member.member_id} = {member.energy}\n"
            case "kick" | "hup":
                self._emit_member(conf, member, f"{verb}-member")
                self.leave(conf.name, member.member_id)
                return f"OK {'kicked' if verb == 'kick' else 'hup'} {member.member_id}\n"
        return f"Conference command '{verb}' not found.\n"

    @staticmethod
    def _list_line(conf: _Conference, member: FakeMember) -> str:
        flags = ["hear"] if not member.deaf else []
        flags += ["speak"] if not member.muted else []
        flags += ["talking"] if member.talking else []
        flags += ["floor"] if conf.floor == member.member_id else []
        return (
            f"{member.member_id};{member.channel_name};{member.uuid};{member.caller_id_name};"
            f"{member.caller_id_number};{'|'.join(flags)};0;0;{member.energy}\n"
        )

    # --- events as FreeSWITCH 1.10 builds them ----------------------------------------------

    def _core_headers(
        self, name: str, function: str, line: int, file: str = "conference_member.c"
    ) -> list[tuple[str, str]]:
        now = time.time()
        return [
            ("Event-Name", name),
            ("Core-UUID", CORE_UUID),
            ("FreeSWITCH-Hostname", HOSTNAME),
            ("FreeSWITCH-Switchname", HOSTNAME),
            ("FreeSWITCH-IPv4", "127.0.0.1"),
            ("FreeSWITCH-IPv6", "::1"),
            ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))),
            ("Event-Date-GMT", formatdate(now, usegmt=True)),
            ("Event-Date-Timestamp", str(int(now * 1_000_000))),
            ("Event-Calling-File", file),
            ("Event-Calling-Function", function),
            ("Event-Calling-Line-Number", str(line)),
            ("Event-Sequence", str(next(self._sequence))),
        ]

    @staticmethod
    def _conference_headers(conf: _Conference) -> list[tuple[str, str]]:
        return [
            ("Conference-Name", conf.name),
            ("Conference-Domain", "127.0.0.1"),
            ("Conference-Size", str(len(conf.members))),
            ("Conference-Ghosts", "0"),
            ("Conference-Profile-Name", "chorus-wideband"),
            ("Conference-Unique-ID", conf.uuid),
        ]

    @staticmethod
    def _channel_headers(member: FakeMember) -> list[tuple[str, str]]:
        """switch_channel_event_set_basic_data for an answered inbound sofia channel."""
        created = str(int(time.time() * 1_000_000))
        return [
            ("Channel-State", "CS_EXECUTE"),
            ("Channel-Call-State", "ACTIVE"),
            ("Channel-State-Number", "4"),
            ("Channel-Name", member.channel_name),
            ("Unique-ID", member.uuid),
            ("Call-Direction", "inbound"),
            ("Presence-Call-Direction", "inbound"),
            ("Channel-HIT-Dialplan", "true"),
            ("Channel-Call-UUID", member.uuid),
            ("Answer-State", "answered"),
            ("Channel-Read-Codec-Name", "G722"),
            ("Channel-Read-Codec-Rate", "16000"),
            ("Channel-Read-Codec-Bit-Rate", "64000"),
            ("Channel-Write-Codec-Name", "G722"),
            ("Channel-Write-Codec-Rate", "16000"),
            ("Channel-Write-Codec-Bit-Rate", "64000"),
            ("Caller-Direction", "inbound"),
            ("Caller-Logical-Direction", "inbound"),
            ("Caller-Username", member.caller_id_number),
            ("Caller-Dialplan", "XML"),
            ("Caller-Caller-ID-Name", member.caller_id_name),
            ("Caller-Caller-ID-Number", member.caller_id_number),
            ("Caller-Orig-Caller-ID-Name", member.caller_id_name),
            ("Caller-Orig-Caller-ID-Number", member.caller_id_number),
            ("Caller-Network-Addr", "127.0.0.1"),
            ("Caller-ANI", member.caller_id_number),
            ("Caller-Destination-Number", "conference"),
            ("Caller-Unique-ID", member.uuid),
            ("Caller-Source", "mod_sofia"),
            ("Caller-Context", "chorus"),
            ("Caller-Channel-Name", member.channel_name),
            ("Caller-Profile-Index", "1"),
            ("Caller-Profile-Created-Time", created),
            ("Caller-Channel-Created-Time", created),
            ("Caller-Channel-Answered-Time", created),
            ("Caller-Channel-Progress-Time", "0"),
            ("Caller-Channel-Progress-Media-Time", "0"),
            ("Caller-Channel-Hangup-Time", "0"),
            ("Caller-Channel-Transfer-Time", "0"),
            ("Caller-Channel-Resurrect-Time", "0"),
            ("Caller-Channel-Bridged-Time", "0"),
            ("Caller-Channel-Last-Hold", "0"),
            ("Caller-Channel-Hold-Accum", "0"),
            ("Caller-Screen-Bit", "true"),
            ("Caller-Privacy-Hide-Name", "false"),
            ("Caller-Privacy-Hide-Number", "false"),
            # switch_channel_event_set_extended_data: a CUSTOM event carries the variables.
            *((f"variable_sip_h_{name}", value) for name, value in member.sip_headers.items()),
        ]

    def _emit_member(self, conf: _Conference, member: FakeMember, action: str) -> None:
        headers = self._core_headers("CUSTOM", "conference_member_add_event_data", 2201)
        headers.append(("Event-Subclass", "conference::maintenance"))
        headers += self._conference_headers(conf)
        headers.append(("Floor", "true" if conf.floor == member.member_id else "false"))
        headers += self._channel_headers(member)
        headers += [
            ("Video", "false"),
            ("Hear", "false" if member.deaf else "true"),
            ("See", "true"),
            ("Speak", "false" if member.muted else "true"),
            ("Talking", "true" if member.talking else "false"),
            ("Mute-Detect", "false"),
            ("Member-ID", str(member.member_id)),
            ("Member-Type", "member"),
            ("Member-Ghost", "false"),
            ("Energy-Level", str(member.energy)),
            ("Current-Energy", "0"),
            ("Action", action),
        ]
        self._broadcast("CUSTOM", "conference::maintenance", headers)

    def _emit_conference(self, conf: _Conference, action: str) -> None:
        headers = self._core_headers("CUSTOM", "conference_new", 3100)
        headers.append(("Event-Subclass", "conference::maintenance"))
        headers += self._conference_headers(conf)
        headers.append(("Action", action))
        self._broadcast("CUSTOM", "conference::maintenance", headers)

    def _emit_hangup(self, member: FakeMember, cause: str) -> None:
        function = "switch_core_session_hangup_state"
        headers = self._core_headers("CHANNEL_HANGUP_COMPLETE", function, 1)
        headers += self._channel_headers(member)
        headers += [("Hangup-Cause", cause), ("variable_sip_from_user", member.caller_id_number)]
        self._broadcast("CHANNEL_HANGUP_COMPLETE", "", headers)

    def api(self, command: str) -> str:
        """Run an ``api`` command as if a client sent it (events go out as usual)."""
        return self._api(command)

    def _broadcast(self, name: str, subclass: str, headers: list[tuple[str, str]]) -> None:
        data = event_plain_bytes(headers)
        self.emitted.append(data)
        for client in self._clients:
            wanted = subclass in client.custom if subclass else name in client.events
            if client.authed and (wanted or "ALL" in client.events):
                if self.half_written:
                    task = asyncio.ensure_future(self._write_in_halves(client, data))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                else:
                    client.writer.write(data)

    @staticmethod
    async def _write_in_halves(client: _Client, data: bytes) -> None:
        async with client.write_lock:
            cut = len(data) // 2
            client.writer.write(data[:cut])
            await client.writer.drain()
            await asyncio.sleep(0.2)
            client.writer.write(data[cut:])


def _atoi(text: str) -> int:
    """C's atoi: the leading digits (with a sign), 0 when there are none."""
    digits = re.match(r"[+-]?\d+", text.strip())
    return int(digits.group()) if digits else 0


async def operator(host: str, port: int, password: str, command: str) -> str:
    """Another ESL client (an operator's fs_cli): authenticate, run one ``api``, return its
    output."""
    reader, writer = await asyncio.open_connection(host, port)
    parser = EslParser()

    async def message() -> tuple[str, bytes, str]:
        while (found := parser.next_message()) is None:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("fake closed the connection")
            parser.feed(data)
        return found.content_type, found.body, found.reply_text

    try:
        await message()  # auth/request
        writer.write(command_bytes(f"auth {password}"))
        _, _, reply = await message()
        if not reply.startswith("+OK"):
            raise PermissionError(reply)
        writer.write(command_bytes(f"api {command}"))
        kind, body, _ = await message()
        return body.decode()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def decode(data: bytes) -> list[EslEvent]:
    """The events in captured ESL bytes (for tests that read the fake's own output)."""
    parser = EslParser()
    parser.feed(data)
    events = []
    while (found := parser.next_message()) is not None:
        if found.content_type == "text/event-plain":
            events.append(parse_event_plain(found.body))
    return events


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()
    fake = await FakeFreeSwitch(args.password, host=args.host, port=args.port).start()
    print("ready", fake.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
