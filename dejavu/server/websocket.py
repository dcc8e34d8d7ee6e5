"""``WS /v1/stream``: live recognition of PCM sent by a client (protocol in :mod:`dejavu.server.stream`)."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, HTTPException, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from dejavu.server.auth import bearer, check_token
from dejavu.server.stream import LIVE_EVERY_SECONDS, ProtocolError, StreamSession, parse_start

log = logging.getLogger(__name__)
router = APIRouter()

ROUTE = "/v1/stream"
#: Seconds a client has to send its first message, and then each next one.
START_TIMEOUT, IDLE_TIMEOUT = 10.0, 60.0
#: WebSocket close codes: normal end, protocol violation / refused.
CLOSE_NORMAL, CLOSE_POLICY = 1000, 1008


@router.websocket(ROUTE)
async def stream(ws: WebSocket) -> None:
    """Feed the client's PCM to a monitor; send its events as JSON text messages."""
    service = ws.app.state.service
    try:   # the token, with protect_reads, as a header or (browsers) ?token=
        check_token(service.settings, bearer(ws.headers.get("authorization")) or ws.query_params.get("token"),
                    write=False)
    except HTTPException as exc:
        service.metrics.request(ROUTE, "WS", exc.status_code)
        await ws.close(code=CLOSE_POLICY, reason=str(exc.detail))
        return
    await ws.accept()
    code = CLOSE_NORMAL
    try:
        session = await _start(ws, service)
        while True:
            message = await _receive(ws, IDLE_TIMEOUT)
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                frame: bytes = message["bytes"]
                if len(frame) > service.settings.max_frame_bytes:
                    raise ProtocolError(f"a frame of {len(frame)} bytes is larger than the limit of "
                                        f"{service.settings.max_frame_bytes} bytes")
                await _send(ws, await service.in_store(session.feed, frame))
            elif _text(message) == {"event": "end"}:
                await _send(ws, await service.in_store(session.finish))
                await ws.send_json({"event": "end", "time": round(session.seconds, 2)})
                break
            else:
                raise ProtocolError('after the first message, send binary PCM frames or {"event": "end"}')
        if ws.client_state == WebSocketState.CONNECTED:
            await _close(ws, code)
    except ProtocolError as exc:
        code = CLOSE_POLICY
        await _refuse(ws, str(exc))
    except WebSocketDisconnect:   # the client went away (while its events were being sent)
        pass
    finally:
        service.metrics.request(ROUTE, "WS", code)


async def _refuse(ws: WebSocket, message: str) -> None:
    """Send an error event and close the session as a policy violation (if the client is still there)."""
    try:
        await ws.send_json({"event": "error", "message": message})
    except WebSocketDisconnect:
        return
    await _close(ws, CLOSE_POLICY)


async def _close(ws: WebSocket, code: int) -> None:
    """Close the session, unless the client closed it first."""
    try:
        await ws.close(code=code)
    except (WebSocketDisconnect, RuntimeError):   # RuntimeError: Starlette's "already closed"
        log.debug("the client closed the stream first")


async def _start(ws: WebSocket, service: Any) -> StreamSession:
    """Read the first message; answer ``ready``."""
    message = await _receive(ws, START_TIMEOUT)
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", CLOSE_NORMAL))
    rate, fmt = parse_start(_text(message))
    session = StreamSession(service.store, service.cfg, rate, fmt, service.settings.max_stream_seconds)
    await ws.send_json({"event": "ready", "sample_rate": rate, "format": fmt,
                        "window_seconds": service.cfg.monitor.window_seconds,
                        "live_every_seconds": LIVE_EVERY_SECONDS})
    return session


async def _receive(ws: WebSocket, timeout: float) -> dict[str, Any]:
    """The next message; ProtocolError if none comes within ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(ws.receive(), timeout)
    except asyncio.TimeoutError:
        raise ProtocolError(f"no message for {timeout:g} s") from None


def _text(message: dict[str, Any]) -> Any:
    """The JSON of a text message (None if it is not text or not JSON)."""
    if message.get("text") is None:
        return None
    try:
        return json.loads(message["text"])
    except json.JSONDecodeError:
        return None


async def _send(ws: WebSocket, events: list[dict[str, Any]]) -> None:
    for event in events:
        await ws.send_json(event)
