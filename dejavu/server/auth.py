"""Bearer-token checks: writes always need the token (and are off without one); reads
need it only with ``server.protect_reads``."""
from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

from dejavu.server.settings import ENV_SERVER_TOKEN, ServerSettings

BEARER = "bearer "


def check_token(settings: ServerSettings, presented: str | None, write: bool) -> None:
    """Raise HTTPException 401 (no token presented) or 403 (wrong token, or writes are off)
    unless ``presented`` is the configured token or the route is an unprotected read."""
    if not write and not settings.protect_reads:
        return
    if settings.token is None:
        raise HTTPException(403, f"write routes are off: configure server.token or {ENV_SERVER_TOKEN}")
    if not presented:
        raise HTTPException(401, "this route needs 'Authorization: Bearer TOKEN'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(presented.encode(), settings.token.encode()):
        raise HTTPException(403, "wrong token")


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    if authorization and authorization[:len(BEARER)].lower() == BEARER:
        return authorization[len(BEARER):].strip() or None
    return None


def require_read(request: Request) -> None:
    """FastAPI dependency of the read routes."""
    check_token(request.app.state.service.settings, bearer(request.headers.get("authorization")), write=False)


def require_write(request: Request) -> None:
    """FastAPI dependency of the write routes."""
    check_token(request.app.state.service.settings, bearer(request.headers.get("authorization")), write=True)
