"""The ``chorus`` commands that talk to a running node's admin API (control/web/api.py).

    chorus rooms                         live rooms, one line each
    chorus room show ROOM                one room: participants and their streams, files
    chorus kick ROOM PARTICIPANT         BYE to every session of that participant
    chorus mute ROOM PARTICIPANT         the mixer stops taking its audio (unmute: back)
    chorus lock ROOM / unlock ROOM       new joins refused 403 / taken again
    chorus pin ROOM PIN                  set the room's PIN (``--clear`` removes it)
    chorus end ROOM                      BYE to everyone in the room
    chorus api-token                     print the API token (generated when missing)

Every command takes ``--config FILE`` (the node's configuration: where its API listens and
its spool, which holds the token and, with ``[api] listen`` on port 0, the URL), ``--url`` and
``--token`` to override them, and ``--json`` for the API's own JSON instead of a table.
Exit status: 0 done, 1 the API refused (its error printed), 2 configuration error, 3 the
node could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from control.apiaccess import api_url, load_token

if TYPE_CHECKING:
    from control.config import Config

__all__ = ["COMMANDS", "add_commands", "run"]

COMMANDS = ("rooms", "room", "kick", "mute", "unmute", "lock", "unlock", "pin", "end", "api-token")
TIMEOUT = 30.0  # seconds for one request (a kick or an end waits for the BYEs)


class ApiFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="the node's TOML configuration file")
    parser.add_argument("--url", help="the API's base URL (default: from the config/spool)")
    parser.add_argument("--token", help="the API token (default: from the config/spool)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")


def add_commands(commands: Any) -> None:
    """Add the admin commands to ``chorus``'s subparsers."""
    p = commands.add_parser("rooms", help="list the live rooms (admin API)")
    _common(p)
    room = commands.add_parser("room", help="one room (admin API)")
    room_commands = room.add_subparsers(dest="room_command", required=True)
    show = room_commands.add_parser("show", help="participants, streams and files of a room")
    show.add_argument("room")
    _common(show)
    for name, text in (
        ("kick", "remove a participant (BYE)"),
        ("mute", "mute a participant"),
        ("unmute", "unmute a participant"),
    ):
        p = commands.add_parser(name, help=text)
        p.add_argument("room")
        p.add_argument("participant", help="id, SIP URI or display name")
        _common(p)
    for name, text in (
        ("lock", "lock a room: new joins get 403"),
        ("unlock", "unlock a room"),
        ("end", "end a room: BYE to everyone"),
    ):
        p = commands.add_parser(name, help=text)
        p.add_argument("room")
        _common(p)
    p = commands.add_parser("pin", help="set (or --clear) a room's PIN")
    p.add_argument("room")
    p.add_argument("pin", nargs="?")
    p.add_argument("--clear", action="store_true", help="remove the room's PIN")
    _common(p)
    p = commands.add_parser("api-token", help="print the admin API token")
    p.add_argument("--config", type=Path, help="the node's TOML configuration file")


def _request(
    base: str, token: str, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base.rstrip("/") + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise ApiFailure(exc.code, str(message)) from None


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell, a rule under the header."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _flags(room: dict[str, Any]) -> str:
    flags = [
        name
        for name, on in (
            ("locked", room.get("locked")),
            ("pin", room.get("has_pin")),
            ("no-private", not room.get("private_messages", True)),
        )
        if on
    ]
    return ",".join(flags) or "-"


def _age(since: float) -> str:
    seconds = max(0, int(time.time() - since))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def _show_rooms(data: dict[str, Any]) -> str:
    rooms = data["rooms"]
    if not rooms:
        return "no rooms"
    rows = [
        (r["id"], f"{r['participants']}/{r['max_participants']}", _flags(r), _age(r["created_at"]))
        for r in rooms
    ]
    return table(("ROOM", "PEOPLE", "FLAGS", "AGE"), rows)


def _show_room(room: dict[str, Any]) -> str:
    lines = [
        f"room {room['id']}  ({room['uri']})",
        f"flags: {_flags(room)}   subscriptions: {room['subscriptions']}"
        f"   up: {_age(room['created_at'])}",
        "",
    ]
    people = room["participants"]
    if people:
        rows = [
            (
                p["id"],
                p["name"],
                p["uri"],
                p["role"],
                ("muted" if p["muted"] else "") + (" awaiting-pin" if p["awaiting_pin"] else ""),
                ",".join(s["kind"] for s in p["streams"]) or "-",
            )
            for p in people
        ]
        lines.append(table(("ID", "NAME", "URI", "ROLE", "STATE", "STREAMS"), rows))
    else:
        lines.append("no participants")
    if room["files"]:
        lines.append("")
        files = [(f["name"], f["size"], f["sender"], f["sha1"][:12]) for f in room["files"]]
        lines.append(table(("FILE", "SIZE", "SENDER", "SHA-1"), files))
    if room["screens"]:
        lines.append("")
        lines.append("sharing a screen: " + ", ".join(room["screens"]))
    return "\n".join(lines)


def run(args: argparse.Namespace, config: Config) -> int:
    if args.command == "api-token":
        print(load_token(config))
        return 0
    try:
        base = args.url or api_url(config)
        token = args.token or load_token(config, create=False)
    except OSError as exc:
        print(f"chorus: is the node running? {exc}", file=sys.stderr)
        return 3
    room = _q(args.room) if getattr(args, "room", None) else ""
    try:
        match args.command:
            case "rooms":
                data = _request(base, token, "GET", "/api/rooms")
                text = _show_rooms(data)
            case "room":
                data = _request(base, token, "GET", f"/api/rooms/{room}")
                text = _show_room(data)
            case "kick" | "mute" | "unmute":
                who = _q(args.participant)
                path = f"/api/rooms/{room}/participants/{who}/{args.command}"
                data = _request(base, token, "POST", path)
                text = f"{args.command}: {args.participant} in {args.room}: done"
            case "lock" | "unlock" | "end":
                data = _request(base, token, "POST", f"/api/rooms/{room}/{args.command}")
                text = f"{args.command}: {args.room}: done"
            case "pin":
                if args.clear == (args.pin is not None):
                    print("chorus: give a PIN or --clear", file=sys.stderr)
                    return 2
                data = _request(base, token, "PUT", f"/api/rooms/{room}/pin", {"pin": args.pin})
                text = f"pin: {args.room}: {'cleared' if args.clear else 'set'}"
            case _:
                return 2
    except ApiFailure as exc:
        print(f"chorus: {exc.status}: {exc}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"chorus: cannot reach the API at {base}: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(data, indent=1) if args.json else text)
    return 0
