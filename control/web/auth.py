"""Bearer-token checks (RFC 6750) shared by the admin API and the web server's /metrics.

The token is the operator's (``[api] token``, control/web/api.py ``load_token``). A missing
token and a wrong one are both ``401`` with ``WWW-Authenticate: Bearer`` (RFC 6750 §3.1:
``invalid_token`` is 401); the comparison takes the same time whatever matches.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

__all__ = ["bearer_refusal", "token_matches"]

log = logging.getLogger("chorus.api")


def token_matches(given: str, token: str) -> bool:
    """The operator's token, compared in constant time (a WebSocket sends it as a message)."""
    return hmac.compare_digest(given.strip().encode(), token.encode())


def bearer_refusal(request: web.Request, token: str) -> web.Response | None:
    """None when ``request`` carries ``Authorization: Bearer <token>``, else the 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return web.json_response(
            {"error": "missing bearer token"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="chorus"'},
        )
    if not token_matches(given, token):
        log.warning("wrong bearer token from %s for %s", request.remote, request.path)
        challenge = 'Bearer realm="chorus", error="invalid_token"'
        return web.json_response(
            {"error": "invalid token"}, status=401, headers={"WWW-Authenticate": challenge}
        )
    return None
