"""What every handler shares: the token signer, the clock, and the URLs we hand out.

`WebUrls` builds every URL the node publishes (chat announcements, conference-info's
``agp-conf:screen_image_url``, the room page's links) from ``[web] public_url`` when set, else
from the bound address; each carries a fresh token in ``?t=``. `verify_token` is the one place
a request's token is checked: a wrong, foreign or expired token is 403 before anything else
is looked at, so a 404 never tells a stranger whether a room exists.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from control.media.engine import ParticipantId, RoomId
from control.web.tokens import TokenError, TokenPurpose, TokenSigner

__all__ = ["CONTEXT", "WebContext", "WebUrls", "verify_token"]

TOKEN_PARAM = "t"


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="@:")  # RFC 3986 §3.3: pchar allows both


@dataclass(slots=True)
class WebUrls:
    """Signed URLs for the web routes; `base` is ``scheme://host:port`` with no slash."""

    base: str
    signer: TokenSigner
    clock: Callable[[], float] = time.time

    def _signed(self, path: str, purpose: TokenPurpose, room: str, subject: str = "") -> str:
        token = self.signer.issue(purpose, room, subject, now=self.clock())
        return f"{self.base}{path}?{TOKEN_PARAM}={token}"

    def screen_page(self, room: RoomId, participant: ParticipantId) -> str:
        """The viewer page: the live screen, pushed over a WebSocket."""
        path = f"/screen/{_segment(room)}/{_segment(participant)}"
        return self._signed(path, TokenPurpose.SCREEN, room, participant)

    def screen_image(self, room: RoomId, participant: ParticipantId) -> str:
        """The current frame as image/jpeg (what conference-info's screen_image_url names)."""
        path = f"/screen/{_segment(room)}/{_segment(participant)}/image.jpg"
        return self._signed(path, TokenPurpose.SCREEN, room, participant)

    def screen_mjpeg(self, room: RoomId, participant: ParticipantId) -> str:
        """The live screen as multipart/x-mixed-replace, for clients without JavaScript."""
        path = f"/screen/{_segment(room)}/{_segment(participant)}/mjpeg"
        return self._signed(path, TokenPurpose.SCREEN, room, participant)

    def room_page(self, room: RoomId) -> str:
        return self._signed(f"/room/{_segment(room)}", TokenPurpose.ROOM, room)

    def file_download(self, room: RoomId, sha1: str) -> str:
        sha1 = sha1.lower()
        return self._signed(f"/files/{_segment(room)}/{sha1}", TokenPurpose.FILE, room, sha1)


@dataclass(slots=True)
class WebContext:
    signer: TokenSigner
    urls: WebUrls
    clock: Callable[[], float] = field(default=time.time)


CONTEXT = web.AppKey("chorus.web.context", WebContext)


def verify_token(request: web.Request, purpose: TokenPurpose, room: str, subject: str = "") -> None:
    """403 unless the request's ``?t=`` token was issued for exactly this, and is unexpired."""
    context = request.app[CONTEXT]
    try:
        context.signer.verify(
            request.query.get(TOKEN_PARAM), purpose, room, subject, now=context.clock()
        )
    except TokenError as exc:
        raise web.HTTPForbidden(text=f"{exc}\n") from exc
