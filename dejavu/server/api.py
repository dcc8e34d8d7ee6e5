"""HTTP routes: recognition, the catalogue, health, metrics and the browser page."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from dejavu.exceptions import DejavuError
from dejavu.logic.decoder import clean_text
from dejavu.logic.fingerprint import fingerprint
from dejavu.logic.search import recognize_samples
from dejavu.logic.store import NewSong
from dejavu.server.app import STATIC_DIR, Service, error
from dejavu.server.auth import require_read, require_write
from dejavu.server.uploads import FILE_FIELD, Upload, UploadError, decode_upload, receive_upload

log = logging.getLogger(__name__)
router = APIRouter()

#: Longest song name stored (characters).
MAX_NAME = 250
#: Most results a recognition may ask for (``?limit=``).
MAX_RESULTS = 20

_AUDIO_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": [FILE_FIELD], "properties": {
        FILE_FIELD: {"type": "string", "format": "binary"}, "name": {"type": "string"}}}},
    "audio/*": {"schema": {"type": "string", "format": "binary"}},
}}}


def _service(request: Request) -> Service:
    return request.app.state.service


def _public(song: dict[str, Any] | None) -> dict[str, Any] | None:
    """A song as the API shows it: without ``source_path`` (the server's file system is its own)."""
    return None if song is None else {k: v for k, v in song.items() if k != "source_path"}


def _limit(seconds: float, configured: float | None) -> float:
    """Seconds decoded: the server's limit, or the configuration's fingerprint_limit if lower."""
    return min(seconds, configured) if configured else seconds


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The browser page."""
    return FileResponse(STATIC_DIR / "index.html")


@router.post("/v1/recognize", dependencies=[Depends(require_read)], openapi_extra=_AUDIO_BODY,
             summary="Recognize an audio clip")
async def recognize(request: Request, limit: int | None = Query(None, ge=1, le=MAX_RESULTS,
                                                                  description="results at most")) -> dict[str, Any]:
    """Recognize a clip sent as multipart field ``file`` or as a raw ``audio/*`` body (any format
    ffmpeg reads). Answers ``{"status": "ok", "results": [...]}`` with the CLI's result keys and
    timings; an empty list means no match."""
    service = _service(request)
    cfg, settings = service.cfg, service.settings
    if limit is not None:
        cfg = replace(cfg, matching=replace(cfg.matching, topn=limit))
    upload = await receive_upload(request, settings.max_upload_bytes)
    start = time.perf_counter()
    try:
        rate = cfg.fingerprint.sample_rate
        samples = await service.in_worker(decode_upload, upload.path, rate,
                                          _limit(settings.max_audio_seconds, cfg.fingerprint_limit),
                                          settings.decode_timeout_seconds)
        result = await service.in_store(recognize_samples, service.store, cfg, samples, rate)
    finally:
        upload.remove()
    service.metrics.recognition(time.perf_counter() - start)
    return {"status": "ok", **result}


@router.get("/v1/songs", dependencies=[Depends(require_read)], summary="List the catalogue")
async def list_songs(request: Request, offset: int = Query(0, ge=0),
                     limit: int = Query(100, ge=1, description="songs per page (at most server.page_size_max)")
                     ) -> dict[str, Any]:
    """Songs by id, one page: ``{"status": "ok", "total", "offset", "limit", "songs": [...]}``."""
    service = _service(request)
    limit = min(limit, service.settings.page_size_max)
    songs = await service.in_store(service.store.get_songs)
    return {"status": "ok", "total": len(songs), "offset": offset, "limit": limit,
            "songs": [_public(s) for s in songs[offset:offset + limit]]}


@router.get("/v1/songs/{song_id}", dependencies=[Depends(require_read)], summary="One song")
async def get_song(request: Request, song_id: int) -> dict[str, Any]:
    service = _service(request)
    song = await service.in_store(service.store.get_song_by_id, song_id)
    if song is None:
        raise HTTPException(404, f"no song with id {song_id}")
    return {"status": "ok", "song": _public(song)}


@router.post("/v1/songs", dependencies=[Depends(require_write)], openapi_extra=_AUDIO_BODY, status_code=201,
             summary="Fingerprint an uploaded song")
async def add_song(request: Request, name: str | None = Query(None, description="song name (or form field 'name')")
                   ) -> JSONResponse:
    """Fingerprint an uploaded song into the catalogue (201), or answer 200 with the stored song
    if the same file (SHA1) is already there."""
    service = _service(request)
    upload = await receive_upload(request, service.settings.max_song_bytes)
    try:
        song_name = _song_name(upload, name)
        existing = await service.in_store(service.store.get_song_by_sha1, upload.sha1)
        if existing is None:
            new = await service.in_worker(_fingerprint_upload, service, upload, song_name)
            song_id = (await service.in_store(service.store.store_songs, [new]))[0]
            if song_id is not None:
                song = await service.in_store(service.store.get_song_by_id, song_id)
                log.info("fingerprinted %r as song %d", song_name, song_id)
                return JSONResponse({"status": "ok", "created": True, "song": _public(song)}, status_code=201)
            existing = await service.in_store(service.store.get_song_by_sha1, upload.sha1)
    finally:
        upload.remove()
    return JSONResponse({"status": "ok", "created": False, "song": _public(existing)}, status_code=200)


def _song_name(upload: Upload, name: str | None) -> str:
    """The name given (query or form field), else the uploaded file's name without extension."""
    given = name or upload.fields.get("name") or os.path.splitext(os.path.basename(upload.filename or ""))[0]
    text = clean_text(given).strip()
    if not text:
        raise UploadError(400, "give the song a name (?name= or form field 'name')")
    return text[:MAX_NAME]


def _fingerprint_upload(service: Service, upload: Upload, song_name: str) -> NewSong:
    """Decode (bounded) and fingerprint an uploaded song. UploadError 422 if it has no hashes."""
    fp, settings = service.cfg.fingerprint, service.settings
    samples = decode_upload(upload.path, fp.sample_rate, _limit(settings.max_song_seconds, service.cfg.fingerprint_limit),
                            settings.decode_timeout_seconds)
    hashes, offsets = fingerprint(samples, fp)
    if hashes.size == 0:
        raise UploadError(422, "no fingerprints: the audio is silent or too short")
    return NewSong(song_name, upload.sha1, hashes, offsets.astype(np.int32), samples.size / fp.sample_rate)


@router.delete("/v1/songs/{song_id}", dependencies=[Depends(require_write)], summary="Delete a song")
async def delete_song(request: Request, song_id: int) -> dict[str, Any]:
    service = _service(request)
    if not await service.in_store(service.store.delete_songs_by_id, [song_id]):
        raise HTTPException(404, f"no song with id {song_id}")
    log.info("deleted song %d", song_id)
    return {"status": "ok", "deleted": song_id}


@router.get("/healthz", summary="Is the store reachable?")
async def healthz(request: Request) -> JSONResponse:
    service = _service(request)
    try:
        songs = await service.in_store(service.store.get_num_songs)
    except DejavuError as exc:
        return error(503, f"the store is not reachable: {exc}")
    return JSONResponse({"status": "ok", "songs": songs})


@router.get("/metrics", summary="Prometheus metrics of this worker")
async def metrics(request: Request) -> PlainTextResponse:
    service = _service(request)
    try:
        songs: int | None = await service.in_store(service.store.get_num_songs)
    except DejavuError:
        songs = None
    return PlainTextResponse(service.metrics.render(songs), media_type="text/plain; version=0.0.4")
