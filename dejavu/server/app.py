"""The FastAPI application of ``dejavu serve``: the factory, the per-worker service state,
error handling and request metrics.  Routes are in :mod:`dejavu.server.api` (HTTP) and
:mod:`dejavu.server.websocket` (``/v1/stream``).

Each worker process opens its own store in the app's lifespan (never at import), and
uses it from one thread; decoding runs in a small pool of threads (each waits on ffmpeg).
"""
from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, AsyncIterator, Callable, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dejavu import Dejavu
from dejavu.config import Config, load_config, read_config_file
from dejavu.exceptions import DejavuError
from dejavu.server.metrics import Metrics
from dejavu.server.settings import ServerSettings, server_settings
from dejavu.server.uploads import UploadError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Environment variable through which ``dejavu serve`` hands the configuration file to its
#: worker processes (empty: the default configuration).
ENV_SERVE_CONFIG = "DEJAVU_SERVE_CONFIG"
STATIC_DIR = Path(__file__).resolve().parent / "static"


class Service:
    """What one worker process serves from: the store, the configuration, thread pools, metrics."""

    def __init__(self, config: Config, settings: ServerSettings, metrics: Metrics) -> None:
        self.djv = Dejavu(config)
        self.store, self.cfg = self.djv.db, self.djv.cfg
        self.settings, self.metrics = settings, metrics
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="dejavu-store")
        self._workers = ThreadPoolExecutor(max(2, os.cpu_count() or 1), thread_name_prefix="dejavu-decode")

    async def in_store(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the one thread that uses the store (connections are not shared)."""
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, partial(fn, *args))

    async def in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` (decoding, fingerprinting: no store access) in the worker threads."""
        return await asyncio.get_running_loop().run_in_executor(self._workers, partial(fn, *args))

    def close(self) -> None:
        self._workers.shutdown(wait=True)
        self._store_thread.submit(self.djv.close).result()
        self._store_thread.shutdown(wait=True)


class MetricsMiddleware:
    """Counts every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:
                route = "/static" if scope["path"].startswith("/static/") else "unmatched"
            self.metrics.request(route, scope["method"], status)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The service's error answer: ``{"status": "error", "message": ...}``."""
    return JSONResponse({"status": "error", "message": message}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
                             for e in exc.errors())
        return error(422, f"invalid request: {problems}")

    @app.exception_handler(DejavuError)
    async def store_error(request: Request, exc: DejavuError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error(503, f"the store failed: {exc}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        return error(500, "internal error (see the server log)")


def create_app(config: Config | None = None, settings: ServerSettings | None = None) -> FastAPI:
    """The service for ``config`` (None: the default configuration) and ``settings``
    (None: the configuration's ``server`` section)."""
    from dejavu import __version__
    from dejavu.server import api, websocket

    config = load_config(config)
    settings = settings or server_settings(config.raw)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(config, settings, metrics)
        warm = getattr(service.store, "warm", None)
        if callable(warm):  # map the index once, not on the first queries
            await service.in_store(warm)
        app.state.service = service
        log.info("serving %s (%s), %d songs", service.cfg.database_type, service.store.location,
                 await service.in_store(service.store.get_num_songs))
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="dejavu", version=__version__, lifespan=lifespan,
                  description="Audio recognition service: name the song and the position in it from a "
                              "few seconds of audio. Errors are `{\"status\": \"error\", \"message\": ...}`.")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(websocket.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def app_from_environment() -> FastAPI:
    """Factory for uvicorn's workers: the configuration file named by ``DEJAVU_SERVE_CONFIG``."""
    path = os.environ.get(ENV_SERVE_CONFIG, "")
    return create_app(read_config_file(path) if path else None)
