"""Where a node's admin API is found (control/web/api.py serves it): its token and its URL.

Both the server (``chorus serve``) and the admin commands (control/admincli.py) read them;
this module needs nothing but the configuration, so the commands do not import the web
server (aiohttp) to find out where to send a request.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from control.config import Config

__all__ = ["TOKEN_FILE", "URL_FILE", "api_dir", "api_url", "load_token"]

TOKEN_FILE = "token"
URL_FILE = "url"


def api_dir(config: Config) -> Path:
    return Path(config.server.spool_dir) / "api"


def load_token(config: Config, *, create: bool = True) -> str:
    """``[api] token``, else the spool's token file, generated (0600) when missing."""
    if config.api.token is not None:
        return config.api.token
    path = api_dir(config) / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if not create:
            raise
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


def api_url(config: Config) -> str:
    """Where the running node's API listens: the configured port, else the spool's URL file."""
    listen = config.api.listen
    if listen.port:
        host = f"[{listen.host}]" if ":" in listen.host else listen.host
        return f"http://{host}:{listen.port}"
    return (api_dir(config) / URL_FILE).read_text().strip()
