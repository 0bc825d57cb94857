"""The web side of the node (aiohttp): screen viewer, room pages, file downloads, each behind
signed, expiring URL tokens. The conference plugs in through `ScreenBoard`
(control/conference/screen.py), `RoomDirectory` / `RoomView` and `FileSource` (views.py)."""

from control.web.context import WebUrls
from control.web.files import parse_range
from control.web.server import WebServer, build_web_server, screen_limits
from control.web.tokens import TokenError, TokenPurpose, TokenSigner, load_secret
from control.web.views import FileEntry, FileSource, ParticipantView, RoomDirectory, RoomView

__all__ = [
    "FileEntry",
    "FileSource",
    "ParticipantView",
    "RoomDirectory",
    "RoomView",
    "TokenError",
    "TokenPurpose",
    "TokenSigner",
    "WebServer",
    "WebUrls",
    "build_web_server",
    "load_secret",
    "parse_range",
    "screen_limits",
]
