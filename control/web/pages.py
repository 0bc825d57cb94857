"""The room page: who is in the room with which media, the room's files with download links,
and the live screens, rendered on the server from the read-only views (control/web/views.py).

Every link on it is signed afresh (files: FILE tokens, screens: SCREEN tokens), so handing
someone the room page hands them what it shows, for `token_ttl`. Live screens are shown by an
``<img>`` on the MJPEG push URL: no script, no polling. A room that is neither running nor has
any stored file is 404 (after the token check: a stranger learns nothing).
"""

from __future__ import annotations

import datetime
import html

from aiohttp import web

from control.conference.screen import ScreenBoard
from control.media.engine import RoomId
from control.web.context import CONTEXT, verify_token
from control.web.tokens import TokenPurpose
from control.web.views import FileEntry, FileSource, ParticipantView, RoomDirectory

__all__ = ["RoomPages"]

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


class RoomPages:
    def __init__(
        self, board: ScreenBoard, rooms: RoomDirectory | None, files: FileSource | None
    ) -> None:
        self.board = board
        self.rooms = rooms
        self.files = files

    async def page(self, request: web.Request) -> web.Response:
        room = RoomId(request.match_info["room"])
        verify_token(request, TokenPurpose.ROOM, room)
        view = self.rooms.room_view(room) if self.rooms is not None else None
        files = list(self.files.room_files(room)) if self.files is not None else []
        if view is None and not files:
            raise web.HTTPNotFound(text="no such room\n")
        urls = request.app[CONTEXT].urls
        title = html.escape(view.uri if view is not None else room)
        parts = [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            f"<title>{title}</title>",
            "<style>body{font:14px sans-serif;margin:1em}table{border-collapse:collapse}"
            "td,th{padding:2px 8px;text-align:left}"
            "img.screen{max-width:480px;border:1px solid #888}"
            "</style></head><body>",
            f"<h1>{title}</h1>",
        ]
        participants: list[ParticipantView] = list(view.participants()) if view else []
        parts.append(f"<h2>Participants ({len(participants)})</h2>")
        if view is None:
            parts.append("<p>The room is not running.</p>")
        parts.append(
            '<table id="participants"><tr><th>name</th><th>address</th>'
            "<th>media</th><th>joined</th></tr>"
        )
        for person in participants:
            parts.append(
                f'<tr data-participant="{html.escape(person.id)}">'
                f"<td>{html.escape(person.name)}</td>"
                f"<td>{html.escape(person.uri)}</td><td>{html.escape(', '.join(person.media))}</td>"
                f"<td>{_when(person.joined_at)}</td></tr>"
            )
        parts.append("</table>")
        parts.append(f"<h2>Files ({len(files)})</h2>")
        parts.append(
            '<table id="files"><tr><th>name</th><th>size</th><th>from</th><th>date</th></tr>'
        )
        for entry in files:
            parts.append(self._file_row(urls.file_download(room, entry.sha1), entry))
        parts.append("</table>")
        screens = self.board.sharing(room)
        names = {p.id: p.name for p in participants}
        parts.append(f"<h2>Screens ({len(screens)})</h2>")
        for shared in screens:
            who = html.escape(names.get(shared.participant, shared.participant))
            viewer = html.escape(urls.screen_page(room, shared.participant))
            live = html.escape(urls.screen_mjpeg(room, shared.participant))
            parts.append(
                f'<figure class="screen"><a href="{viewer}"><img class="screen" src="{live}" '
                f'alt="screen of {who}"></a><figcaption>{who}: '
                f"{shared.frame.width}×{shared.frame.height}</figcaption></figure>"
            )
        parts.append("</body></html>\n")
        return web.Response(text="\n".join(parts), content_type="text/html", headers=PAGE_HEADERS)

    @staticmethod
    def _file_row(url: str, entry: FileEntry) -> str:
        return (
            f'<tr data-sha1="{entry.sha1}"><td><a class="download" href="{html.escape(url)}" '
            f'download="{html.escape(entry.name)}">{html.escape(entry.name)}</a></td>'
            f"<td>{_size(entry.size)}</td><td>{html.escape(entry.sender)}</td>"
            f"<td>{html.escape(entry.date)}</td></tr>"
        )
