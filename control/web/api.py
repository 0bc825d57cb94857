"""The admin API (aiohttp): the operator's view of the rooms and its moderation actions.

JSON over HTTP on loopback (``[api] listen``, default ``http:127.0.0.1:0``: a free port, the
URL written to ``<spool_dir>/api/url`` for the CLI). Every route but ``/api/health`` and
``/api/openapi.json`` needs ``Authorization: Bearer <token>`` (RFC 6750): the token is
``[api] token``, else generated once into ``<spool_dir>/api/token`` (mode 0600) and printed
by ``chorus api-token``. A missing token and a wrong one are both ``401`` with
``WWW-Authenticate: Bearer`` (RFC 6750 §3.1: ``invalid_token`` is 401; 403 is for a scope we
do not have). The token is the operator: it may act on any room and anyone.

The routes are one table (:data:`ROUTES`) from which both the router and the OpenAPI 3
document at ``/api/openapi.json`` are built, so the document names every route. Rooms are
named by id (``user@host``) or, when unambiguous, by user part; participants by id, SIP URI
or display name. Bad input is ``400`` with ``{"error": ...}``; an unknown room or
participant ``404`` likewise.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from control.apiaccess import api_url, load_token  # re-exported (the CLI's: no aiohttp)
from control.conference.chat import ChatMember
from control.conference.info import media_status
from control.conference.infosubs import nicknames
from control.conference.moderation import Moderation, check_pin, find_participant
from control.conference.participant import Participant
from control.conference.room import Room
from control.media.engine import RoomId
from control.sip.errors import SipError
from control.sip.uri import SipUri, parse_uri
from control.web.auth import bearer_refusal
from control.xmpp.addressing import escape_localpart

__all__ = [
    "ROUTES",
    "AdminApi",
    "ConferenceControl",
    "api_url",
    "participants_json",
    "load_token",
    "openapi_document",
]

log = logging.getLogger("chorus.api")

MAX_BODY = 64 * 1024  # an action's JSON body


class ConferenceControl(Protocol):
    """What the API reads and drives (control/conference/app.py ConferenceApp)."""

    rooms: dict[RoomId, Room]
    moderation: Moderation

    def subscription_count(self, room: Room) -> int: ...


class FileLister(Protocol):
    def list(self, room: str) -> list[Any]: ...


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, indent=1))


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


# --- views ---------------------------------------------------------------------------------


def participant_json(participant: Participant, room: Room | None = None) -> dict[str, object]:
    """A participant as the operator sees it, with what conference-info shows of it: the
    room chat's ``nickname`` for its identity (RFC 7701, null when none) and each stream's
    ``direction``, the participant's side (``sendonly`` or ``inactive``: it holds the room)."""
    names = nicknames(room) if room is not None else {}
    return {
        "id": participant.id,
        "uri": participant.uri,
        "name": participant.name,
        "nickname": names.get(participant.uri),
        "role": participant.role,
        "muted": participant.muted,
        "awaiting_pin": participant.awaiting_pin,
        "transfer_only": participant.transfer_only,
        "joined_at": participant.joined_at,
        "streams": [
            {
                "index": index,
                "kind": stream.kind.value,
                "direction": media_status(stream.accept.direction),
            }
            for index, stream in sorted(participant.streams.items())
        ],
    }


def participants_json(room: Room, moderation: Moderation) -> list[dict[str, object]]:
    """Everyone in the room as conference-info lists them: the SIP participants
    (``kind: "sip"``) and the chat-only members, XMPP occupants through MUC
    (``kind: "xmpp"``, :func:`occupant_json`)."""
    people = [{**participant_json(p, room), "kind": "sip"} for p in room.participants.values()]
    return people + [
        occupant_json(room, sessions, moderation.role_for(room, sessions[0].uri))
        for sessions in occupants(room).values()
    ]


def occupants(room: Room) -> dict[str, list[ChatMember]]:
    """The room's XMPP occupants (:attr:`Room.chat_only`), one per identity: a user's
    resources are one occupant (XEP-0045 §7.2.10), conference-info one user."""
    found: dict[str, list[ChatMember]] = {}
    for member in room.chat_only:
        found.setdefault(member.key, []).append(member)
    return found


def occupant_json(room: Room, sessions: list[ChatMember], role: str) -> dict[str, object]:
    """An XMPP occupant: its SIP identity (conference-info's user entity) and its bare JID,
    its MUC nick (the room's nickname), one chat stream per session (resource)."""
    member = sessions[0]
    nickname = nicknames(room).get(member.uri) or member.nickname
    return {
        "id": str(member.participant),
        "kind": "xmpp",
        "uri": member.uri,
        "jid": bare_jid(member.uri),
        "name": member.shown_name,
        "nickname": nickname,
        "role": role,
        "muted": False,
        "awaiting_pin": False,
        "transfer_only": False,
        "joined_at": min((m.joined_at or room.created_at) for m in sessions),
        "streams": [
            {"index": index, "kind": "chat", "direction": "sendrecv"}
            for index, _ in enumerate(sessions)
        ],
    }


def bare_jid(uri: str) -> str | None:
    """The bare JID of an XMPP user's SIP identity (the gateway's mapping, RFC 7247 +
    XEP-0106), None when the URI is not a SIP URI with a user."""
    try:
        parsed = parse_uri(uri)
    except SipError:
        return None
    user = parsed.unescaped_user() if isinstance(parsed, SipUri) else None
    if not user or not isinstance(parsed, SipUri):
        return None
    return f"{escape_localpart(user)}@{parsed.host.lower()}"


def find_occupant(room: Room, key: str) -> list[ChatMember] | None:
    """An XMPP occupant's sessions, named by its id, SIP URI, bare JID or nickname."""
    wanted = key.lower()
    for sessions in occupants(room).values():
        member = sessions[0]
        names = {str(member.participant), member.uri, bare_jid(member.uri), member.shown_name}
        if wanted in {n.lower() for n in names if n} or "sip:" + wanted == member.uri.lower():
            return sessions
    return None


def room_summary(room: Room) -> dict[str, object]:
    people = [p for p in room.participants.values() if not p.transfer_only]
    return {
        "id": room.id,
        "uri": f"sip:{room.id}",
        "participants": len(people),
        "xmpp_occupants": len(occupants(room)),
        "max_participants": room.max_participants,
        "locked": room.locked,
        "has_pin": room.pin is not None,
        "private_messages": room.private_messages,
        "created_at": room.created_at,
    }


# --- the route table -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    name: str  # the AdminApi method, and the OpenAPI operationId
    summary: str
    body: dict[str, object] | None = None  # JSON schema of the request body
    public: bool = False  # no token needed


_ROOM = "/api/rooms/{room}"
_PARTICIPANT = _ROOM + "/participants/{participant}"
_PIN_BODY: dict[str, object] = {
    "type": "object",
    "required": ["pin"],
    "properties": {
        "pin": {"type": ["string", "null"], "description": "1-32 of 0-9 * A-D; null clears"}
    },
}
_ALLOWED_BODY: dict[str, object] = {
    "type": "object",
    "required": ["allowed"],
    "properties": {"allowed": {"type": "boolean"}},
}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/health", "health", "Liveness and counts", public=True),
    Route("GET", "/api/openapi.json", "openapi", "This document", public=True),
    Route("GET", "/api/rooms", "list_rooms", "Live rooms"),
    Route("GET", _ROOM, "show_room", "One room: participants, streams, files, subscriptions"),
    Route("POST", _ROOM + "/end", "end_room", "End the room: BYE to everyone"),
    Route("POST", _ROOM + "/lock", "lock", "Lock the room: new joins get 403"),
    Route("POST", _ROOM + "/unlock", "unlock", "Unlock the room"),
    Route("PUT", _ROOM + "/pin", "set_pin", "Set or clear the room's PIN", body=_PIN_BODY),
    Route(
        "PUT",
        _ROOM + "/private-messages",
        "private_messages",
        "Allow or disable private messages in the room chat",
        body=_ALLOWED_BODY,
    ),
    Route("GET", _ROOM + "/participants", "list_participants", "The room's participants"),
    Route("GET", _PARTICIPANT, "show_participant", "One participant"),
    Route("POST", _PARTICIPANT + "/mute", "mute", "Mute: the mixer stops taking its audio"),
    Route("POST", _PARTICIPANT + "/unmute", "unmute", "Unmute"),
    Route(
        "POST",
        _PARTICIPANT + "/kick",
        "kick",
        "Remove: BYE to every session of it; an XMPP occupant leaves the MUC (307)",
    ),
)


def openapi_document() -> dict[str, object]:
    """OpenAPI 3.0 for :data:`ROUTES`."""
    paths: dict[str, dict[str, object]] = {}
    error = {"$ref": "#/components/responses/Error"}
    for route in ROUTES:
        params = [
            {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for part in route.path.split("/")
            if part.startswith("{")
        ]
        operation: dict[str, object] = {
            "operationId": route.name,
            "summary": route.summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {}}},
                "400": error,
                "401": error,
                "404": error,
            },
        }
        if route.public:
            operation["security"] = []
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": route.body}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "Chorus admin API", "version": "1"},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Error": {
                    "description": "An error",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"error": {"type": "string"}},
                            }
                        }
                    },
                }
            },
        },
    }


class AdminApi:
    """The aiohttp application; :meth:`start` listens on ``[api] listen``."""

    def __init__(
        self,
        conference: ConferenceControl,
        token: str,
        *,
        files: FileLister | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conference = conference
        self.token = token
        self.files = files
        self.clock = clock
        self.started = clock()
        self.app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        self._public = {(r.method, r.path) for r in ROUTES if r.public}
        for route in ROUTES:
            self.app.router.add_route(route.method, route.path, getattr(self, route.name))
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    # --- serving ---------------------------------------------------------------------------

    async def start(self, host: str, port: int, url_file: Path | None = None) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # aiohttp exposes no public accessor for the bound port
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound}"
        if url_file is not None:
            url_file.parent.mkdir(parents=True, exist_ok=True)
            url_file.write_text(self.url + "\n")
        log.info("admin API listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else request.path
        if (request.method, canonical) not in self._public:
            refusal = bearer_refusal(request, self.token)
            if refusal is not None:
                return refusal
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error(exc.status, exc.reason)

    # --- lookups ---------------------------------------------------------------------------

    def _room(self, request: web.Request) -> Room:
        key = request.match_info["room"].lower()
        rooms = self.conference.rooms
        room = rooms.get(RoomId(key))
        if room is None:
            named = [r for r in rooms.values() if r.id.partition("@")[0] == key]
            if len(named) > 1:
                raise ApiError(400, f"room {key!r} is ambiguous: give user@host")
            room = named[0] if named else None
        if room is None:
            raise ApiError(404, f"no room {key!r}")
        return room

    def _participant(self, request: web.Request) -> tuple[Room, Participant]:
        room = self._room(request)
        key = request.match_info["participant"]
        participant = find_participant(room, key)
        if participant is None:
            raise ApiError(404, f"no participant {key!r} in {room.id}")
        return room, participant

    def _occupant(self, request: web.Request, room: Room) -> list[ChatMember] | None:
        """The XMPP occupant the path names, when no SIP participant goes by that name."""
        key = request.match_info["participant"]
        return find_occupant(room, key) if find_participant(room, key) is None else None

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object")
        return data

    # --- handlers --------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        rooms = self.conference.rooms
        return _json(
            {
                "status": "ok",
                "rooms": len(rooms),
                "participants": sum(len(r) for r in rooms.values()),
                "uptime": round(self.clock() - self.started, 3),
            }
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document())

    async def list_rooms(self, request: web.Request) -> web.Response:
        return _json({"rooms": [room_summary(r) for r in list(self.conference.rooms.values())]})

    async def show_room(self, request: web.Request) -> web.Response:
        room = self._room(request)
        data = room_summary(room)
        data["participants"] = participants_json(room, self.conference.moderation)
        data["files"] = self._files(room)
        data["screens"] = sorted(room.screens)
        data["subscriptions"] = self.conference.subscription_count(room)
        return _json(data)

    def _files(self, room: Room) -> list[dict[str, object]]:
        if self.files is None:
            return []
        try:
            records = self.files.list(room.id)
        except Exception:
            log.exception("listing the files of %s failed", room.id)
            return []
        return [
            {
                "name": f.name,
                "size": f.size,
                "type": f.content_type,
                "sha1": f.sha1,
                "sender": f.sender,
                "time": f.time.isoformat(),
            }
            for f in records
        ]

    async def list_participants(self, request: web.Request) -> web.Response:
        room = self._room(request)
        return _json({"participants": participants_json(room, self.conference.moderation)})

    async def show_participant(self, request: web.Request) -> web.Response:
        room = self._room(request)
        sessions = self._occupant(request, room)
        if sessions is not None:
            role = self.conference.moderation.role_for(room, sessions[0].uri)
            return _json(occupant_json(room, sessions, role))
        room, participant = self._participant(request)
        return _json({**participant_json(participant, room), "kind": "sip"})

    async def mute(self, request: web.Request) -> web.Response:
        room, participant = self._participant(request)
        await self.conference.moderation.set_muted(room, participant, True)
        return _json(participant_json(participant, room))

    async def unmute(self, request: web.Request) -> web.Response:
        room, participant = self._participant(request)
        await self.conference.moderation.set_muted(room, participant, False)
        return _json(participant_json(participant, room))

    async def kick(self, request: web.Request) -> web.Response:
        room = self._room(request)
        sessions = self._occupant(request, room)
        if sessions is not None:
            # Its chat sessions are detached: the MUC gateway sends it its 307 presence.
            self.conference.moderation.kick_chat_only(room, sessions[0].uri)
            return _json({"kicked": sessions[0].uri, "room": room.id, "kind": "xmpp"})
        room, participant = self._participant(request)
        await self.conference.moderation.kick(room, participant)
        return _json({"kicked": participant.uri, "room": room.id})

    async def lock(self, request: web.Request) -> web.Response:
        room = self._room(request)
        self.conference.moderation.set_locked(room, True)
        return _json(room_summary(room))

    async def unlock(self, request: web.Request) -> web.Response:
        room = self._room(request)
        self.conference.moderation.set_locked(room, False)
        return _json(room_summary(room))

    async def set_pin(self, request: web.Request) -> web.Response:
        room = self._room(request)
        body = await self._body(request)
        if "pin" not in body:
            raise ApiError(400, 'expected {"pin": "1234"} or {"pin": null}')
        pin = body["pin"]
        if pin is not None and not isinstance(pin, str):
            raise ApiError(400, "pin must be a string or null")
        try:
            await self.conference.moderation.set_pin(room, None if pin is None else check_pin(pin))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return _json(room_summary(room))

    async def private_messages(self, request: web.Request) -> web.Response:
        room = self._room(request)
        body = await self._body(request)
        allowed = body.get("allowed")
        if not isinstance(allowed, bool):
            raise ApiError(400, 'expected {"allowed": true|false}')
        self.conference.moderation.set_private_messages(room, allowed)
        return _json(room_summary(room))

    async def end_room(self, request: web.Request) -> web.Response:
        room = self._room(request)
        ended = await self.conference.moderation.end_room(room)
        return _json({"ended": room.id, "participants": ended})
