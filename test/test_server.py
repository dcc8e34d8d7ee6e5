"""``dejavu serve``: the real service in a subprocess on a free 127.0.0.1 port, over HTTP and
WebSocket, against a store of real music (the dev corpus)."""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import websockets  # the service's extra and the test clients: pip install -r requirements.txt -e .[server]
from websockets.exceptions import ConnectionClosed, WebSocketException

from conftest import ROOT, cut, run_cli
from dejavu.testing import mariadb_available, postgres_available

TOKEN = "test-token-123"
UPLOAD_LIMIT = 400_000          # bytes: server.max_upload_bytes of the test servers
#: Songs fingerprinted into the store / uploaded through the API / never fingerprinted.
STORED, UPLOADED, UNKNOWN = ("MarineFireFight", "dbsea"), "PsymongR2", "David02"


class Server:
    """``python dejavu.py serve`` on a free loopback port; stopped by :meth:`stop`."""

    def __init__(self, config: Path, tmp: Path, env: dict | None = None, *args: str) -> None:
        from dejavu.testing import free_port

        self.port = free_port()
        self.log = tmp / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "dejavu.py"), "serve", "--config", str(config), "--port", str(self.port),
             *args],
            cwd=tmp, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=subprocess.DEVNULL, stderr=self.log.open("wb"), stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"dejavu serve exited: {self.log.read_text()}"
            try:
                if self.call("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"dejavu serve did not answer /healthz: {self.log.read_text()}")

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
             timeout: float = 60) -> tuple[int, dict | str, dict]:
        """(status, JSON or text body, headers) of one request."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read().decode()
            kind = response.getheader("content-type", "")
            return response.status, json.loads(data) if kind.startswith("application/json") else data, \
                dict(response.getheaders())
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def multipart(fields: dict[str, bytes | str], filename: str = "clip.mp3") -> tuple[bytes, dict]:
    """A multipart/form-data body of ``fields`` (bytes values are sent as files) and its headers."""
    boundary = "dejavu-test-boundary-7d2f"
    parts = []
    for name, value in fields.items():
        if isinstance(value, bytes):
            head = (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n")
            parts.append(f"--{boundary}\r\n{head}".encode() + value + b"\r\n")
        else:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def audio(path: Path) -> tuple[bytes, dict]:
    return path.read_bytes(), {"Content-Type": "audio/mpeg"}


@pytest.fixture(scope="module")
def music(corpus, tmp_path_factory) -> dict[str, Path]:
    """The corpus songs by name, 5 s MP3 clips of them, and a 44.1 kHz s16le stretch of one."""
    d = tmp_path_factory.mktemp("service-music")
    songs = {p.stem: p for p in corpus}
    found = {name: songs[name] for name in (*STORED, UPLOADED, UNKNOWN)}
    for name in (*STORED, UPLOADED, UNKNOWN):
        found[f"clip:{name}"] = cut(songs[name], d / f"{name}-clip.mp3", 40, 5)
    found["pcm"] = cut(songs[STORED[0]], d / "stream.raw", 30, 20, "-ac", "1", "-ar", "44100", "-f", "s16le")
    return found


@pytest.fixture(scope="module")
def store_config(music, tmp_path_factory) -> Path:
    """A config file on an SQLite store holding the STORED songs, with a token and a small upload limit."""
    d = tmp_path_factory.mktemp("service-store")
    config = d / "config.json"
    config.write_text(json.dumps({"database_type": "sqlite", "database": {"path": str(d / "fp.db")},
                                  "server": {"token": TOKEN, "max_upload_bytes": UPLOAD_LIMIT,
                                             "max_frame_bytes": 65536}}))
    for name in STORED:
        out = run_cli("--config", str(config), "--fingerprint", str(music[name]), "--no-progress")
        assert out.returncode == 0, out.stderr
    return config


@pytest.fixture(scope="module")
def server(store_config, tmp_path_factory):
    srv = Server(store_config, tmp_path_factory.mktemp("serve"))
    yield srv
    srv.stop()


def _with(config: Path, tmp: Path, **server: object) -> Path:
    """A copy of ``config`` with other ``server`` settings."""
    raw = json.loads(config.read_text())
    raw["server"] = server
    path = tmp / "config.json"
    path.write_text(json.dumps(raw))
    return path


# ---------------------------------------------------------------------- recognition
def test_recognize_answers_with_the_cli_result_keys(server, music, store_config):
    body, headers = multipart({"file": music[f"clip:{STORED[1]}"].read_bytes()})
    status, answer, _ = server.call("POST", "/v1/recognize", body, headers)
    assert status == 200 and answer["status"] == "ok"
    best = answer["results"][0]
    assert best["song_name"] == STORED[1] and abs(best["offset_seconds"] - 40) < 0.5
    cli = run_cli("--config", str(store_config), "--recognize", "file", str(music[f"clip:{STORED[1]}"]))
    expected = json.loads(cli.stdout)
    assert set(answer) == set(expected) | {"status"}
    assert [set(r) for r in answer["results"]] == [set(r) for r in expected["results"]]
    assert best["hashes_matched_in_input"] == expected["results"][0]["hashes_matched_in_input"]


def test_recognize_raw_body_limit_and_no_match(server, music):
    status, answer, _ = server.call("POST", "/v1/recognize?limit=1", *audio(music[f"clip:{STORED[0]}"]))
    assert status == 200 and len(answer["results"]) == 1 and answer["results"][0]["song_name"] == STORED[0]
    status, answer, _ = server.call("POST", "/v1/recognize", *audio(music[f"clip:{UNKNOWN}"]))
    assert (status, answer["status"], answer["results"]) == (200, "ok", [])
    status, answer, _ = server.call("POST", "/v1/recognize?limit=0", *audio(music[f"clip:{STORED[0]}"]))
    assert status == 422 and "limit" in answer["message"]


@pytest.mark.parametrize("body, headers, status, words", [
    (b"", {"Content-Type": "audio/mpeg"}, 400, "empty"),
    (b"not audio", {"Content-Type": "text/plain"}, 415, "multipart field 'file'"),
    (b"RIFF\x00\x00garbage" * 50, {"Content-Type": "audio/wav"}, 422, "undecodable audio"),
    (multipart({"name": "x"})[0], multipart({"name": "x"})[1], 400, "missing multipart field 'file'"),
    (b"--nope\r\nbroken", {"Content-Type": "multipart/form-data"}, 400, "boundary"),
])
def test_recognize_errors_are_json_messages(server, body, headers, status, words):
    got, answer, _ = server.call("POST", "/v1/recognize", body, headers)
    assert got == status and answer["status"] == "error" and words in answer["message"]
    assert "Traceback" not in answer["message"]


def test_urls_and_scripts_sent_as_audio_are_undecodable_bytes(server, music, tmp_path):
    """A URL, a protocol string, an ffconcat script naming a real audio file on the server and a
    playlist are only bytes to decode: 422, and the server fetches and opens nothing."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(1.0)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.mp3"
    wav = cut(music[STORED[0]], tmp_path / "real.wav", 30, 5)
    bodies = [url, "concat:/etc/passwd", "file:/etc/passwd", f"file:{wav}",
              f"ffconcat version 1.0\nfile '{wav}'\n", f"#EXTM3U\n#EXTINF:5,\n{url}\n"]
    try:
        for body in bodies:
            status, answer, _ = server.call("POST", "/v1/recognize", body.encode(), {"Content-Type": "audio/mpeg"})
            assert status == 422 and answer["message"].startswith("undecodable audio"), (body, answer)
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()


def _raw_request(port: int, head: bytes, body_parts: list[bytes]) -> str:
    """Send ``head`` and the ``body_parts`` (stopping if the server closes), then read its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        for part in body_parts:
            try:
                s.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
        received = b""
        while b"\r\n\r\n" not in received and (data := s.recv(65536)):
            received += data
        length = int(re.search(rb"(?i)content-length: *(\d+)", received).group(1))
        while len(received.partition(b"\r\n\r\n")[2]) < length and (data := s.recv(65536)):
            received += data
        return received.decode("latin-1")


def test_a_body_over_the_limit_is_refused_before_it_is_all_sent(server):
    # Announced: refused from the headers, with 1 kB of the body sent.
    head = (f"POST /v1/recognize HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\n"
            f"Content-Length: {UPLOAD_LIMIT + 1}\r\n\r\n").encode()
    answer = _raw_request(server.port, head + b"\0" * 1024, [])
    assert answer.startswith("HTTP/1.1 413") and "larger than the limit" in answer
    # Streamed (chunked, length unknown): refused once the count passes the limit, the body unfinished.
    head = b"POST /v1/recognize HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"\0" * 50_000
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (UPLOAD_LIMIT // len(chunk)) + [b"1\r\n\0\r\n"]
    answer = _raw_request(server.port, head, parts)      # no final 0-chunk: the body never ends
    assert answer.startswith("HTTP/1.1 413") and f"limit of {UPLOAD_LIMIT} bytes" in answer


# ---------------------------------------------------------------------- the catalogue and auth
def test_song_routes_page_get_and_404(server):
    status, page, _ = server.call("GET", "/v1/songs?limit=1")
    assert status == 200 and page["total"] == 2 and [s["song_name"] for s in page["songs"]] == [STORED[0]]
    status, rest, _ = server.call("GET", "/v1/songs?offset=1&limit=10")
    assert [s["song_name"] for s in rest["songs"]] == [STORED[1]] and "source_path" not in rest["songs"][0]
    song_id = rest["songs"][0]["song_id"]
    status, one, _ = server.call("GET", f"/v1/songs/{song_id}")
    assert status == 200 and one["song"]["song_name"] == STORED[1]
    assert server.call("GET", "/v1/songs/999999")[0] == 404
    assert server.call("GET", "/v1/songs/abc")[0] == 422
    assert server.call("DELETE", "/v1/songs/999999", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 404


def test_upload_recognize_and_delete_a_song_with_the_token(server, music):
    body, headers = multipart({"file": music[UPLOADED].read_bytes(), "name": "Uploaded – Song"}, "psy.mp3")
    status, answer, reply_headers = server.call("POST", "/v1/songs", body, headers)
    assert status == 401 and reply_headers.get("www-authenticate") == "Bearer"
    status, answer, _ = server.call("POST", "/v1/songs", body, {**headers, "Authorization": "Bearer wrong"})
    assert (status, answer["message"]) == (403, "wrong token")
    auth = {**headers, "Authorization": f"Bearer {TOKEN}"}
    status, answer, _ = server.call("POST", "/v1/songs", body, auth)
    assert status == 201 and answer["created"] and answer["song"]["song_name"] == "Uploaded – Song"
    song_id = answer["song"]["song_id"]
    status, again, _ = server.call("POST", "/v1/songs", body, auth)
    assert status == 200 and not again["created"] and again["song"]["song_id"] == song_id
    status, found, _ = server.call("POST", "/v1/recognize", *audio(music[f"clip:{UPLOADED}"]))
    assert found["results"][0]["song_id"] == song_id and abs(found["results"][0]["offset_seconds"] - 40) < 0.5
    garbage, garbage_headers = multipart({"file": b"http://127.0.0.1/x", "name": "bad"})
    status, answer, _ = server.call("POST", "/v1/songs", garbage, {**garbage_headers, "Authorization": f"Bearer {TOKEN}"})
    assert status == 422 and answer["message"].startswith("undecodable audio")
    assert server.call("DELETE", f"/v1/songs/{song_id}")[0] == 401
    status, answer, _ = server.call("DELETE", f"/v1/songs/{song_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (status, answer["deleted"]) == (200, song_id)
    assert server.call("GET", f"/v1/songs/{song_id}")[0] == 404
    status, found, _ = server.call("POST", "/v1/recognize", *audio(music[f"clip:{UPLOADED}"]))
    assert found["results"] == []


def test_without_a_token_writes_are_off_and_the_audio_limits_hold(server, store_config, music, tmp_path):
    srv = Server(_with(store_config, tmp_path, max_audio_seconds=2, max_stream_seconds=3), tmp_path)
    try:
        body, headers = multipart({"file": music[f"clip:{UNKNOWN}"].read_bytes(), "name": "x"})
        for method, path in (("POST", "/v1/songs"), ("DELETE", "/v1/songs/1")):
            status, answer, _ = srv.call(method, path, body if method == "POST" else None,
                                         {**headers, "Authorization": f"Bearer {TOKEN}"})
            assert status == 403 and "write routes are off" in answer["message"]
        assert srv.call("GET", "/v1/songs")[1]["total"] == 2
        # Only the first 2 s of a 5 s clip are decoded (and still recognized).
        clip = audio(music[f"clip:{STORED[0]}"])
        short, full = srv.call("POST", "/v1/recognize", *clip)[1], server.call("POST", "/v1/recognize", *clip)[1]
        assert short["results"][0]["song_name"] == STORED[0]
        hashes = [a["results"][0]["input_total_hashes"] for a in (short, full)]
        assert 0.25 < hashes[0] / hashes[1] < 0.55
        pcm = music["pcm"].read_bytes()
        events = asyncio.run(_stream(srv.port, {"sample_rate": 44100, "format": "s16le"},
                                     [pcm[i:i + 44100] for i in range(0, len(pcm), 44100)]))
        assert events[-1]["event"] == "error" and "longer than the limit of 3 s" in events[-1]["message"]
    finally:
        srv.stop()


def test_protected_reads_take_the_token_from_the_environment(store_config, tmp_path):
    srv = Server(_with(store_config, tmp_path, protect_reads=True), tmp_path, env={"DEJAVU_SERVER_TOKEN": "env-tok"})
    try:
        assert srv.call("GET", "/v1/songs")[0] == 401
        assert srv.call("GET", "/v1/songs", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 403
        assert srv.call("GET", "/v1/songs", headers={"Authorization": "Bearer env-tok"})[0] == 200
        assert srv.call("GET", "/healthz")[0] == 200

        async def first_event(query: str) -> dict:
            async with websockets.connect(f"ws://127.0.0.1:{srv.port}/v1/stream{query}") as ws:
                await ws.send(json.dumps({"sample_rate": 16000, "format": "s16le"}))
                return json.loads(await ws.recv())

        with pytest.raises(WebSocketException):
            asyncio.run(first_event(""))
        assert asyncio.run(first_event("?token=env-tok"))["event"] == "ready"
    finally:
        srv.stop()


# ---------------------------------------------------------------------- live stream
async def _stream(port: int, start: dict, frames: list[bytes]) -> list[dict]:
    """Send ``start``, the frames and the end (until the server closes); every event it sent."""
    events = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
        await ws.send(json.dumps(start))

        async def read() -> None:
            try:
                async for message in ws:
                    events.append(json.loads(message))
            except ConnectionClosed:      # closed with an error code: the events are all read
                pass

        reader = asyncio.create_task(read())
        try:
            for frame in frames:
                await ws.send(frame)
            await ws.send(json.dumps({"event": "end"}))
        except ConnectionClosed:
            pass
        await asyncio.wait_for(reader, 60)
    return events


def test_stream_reports_the_song_live_and_its_segment(server, music):
    pcm = music["pcm"].read_bytes()
    frames = [pcm[i:i + 8820] for i in range(0, len(pcm), 8820)]      # 0.1 s frames
    events = asyncio.run(_stream(server.port, {"sample_rate": 44100, "format": "s16le"}, frames))
    assert events[0]["event"] == "ready" and events[-1] == {"event": "end", "time": 20.0}
    live = [e for e in events if e["event"] in ("match", "no_match")]
    assert len(live) >= 6 and all(e["event"] == "match" and e["song_name"] == STORED[0] for e in live)
    assert all(0.3 <= e["confidence"] <= 1 for e in live)
    assert abs(live[-1]["position_seconds"] - (30 + live[-1]["time"])) < 1.0
    segments = [e for e in events if e["event"] == "segment"]
    assert [s["song_name"] for s in segments] == [STORED[0]]
    assert segments[0]["start_seconds"] < 1 and segments[0]["end_seconds"] > 19


def test_stream_of_silence_is_no_match(server):
    frame = np.zeros(4800, dtype="<f4").tobytes()                   # 0.1 s at 48 kHz
    events = asyncio.run(_stream(server.port, {"sample_rate": 48000, "format": "f32le"}, [frame] * 60))
    live = [e["event"] for e in events if e["event"] in ("match", "no_match")]
    assert live == ["no_match", "no_match"] and not [e for e in events if e["event"] == "segment"]


def test_clients_that_drop_a_stream_leave_no_traceback(server, music):
    pcm = music["pcm"].read_bytes()

    async def drop(abort: bool) -> None:
        ws = await websockets.connect(f"ws://127.0.0.1:{server.port}/v1/stream")
        await ws.send(json.dumps({"sample_rate": 44100, "format": "s16le"}))
        for i in range(0, len(pcm), 88200):                              # 1 s frames, events unread
            await ws.send(pcm[i:i + 88200])
        ws.transport.abort() if abort else await ws.close()

    for abort in (True, False):
        asyncio.run(drop(abort))
    time.sleep(2)
    assert server.call("GET", "/healthz")[0] == 200 and "Traceback" not in server.log.read_text()


@pytest.mark.parametrize("start, frame, words", [
    ({"sample_rate": 100}, b"", "sample_rate must be an integer"),
    ({"sample_rate": 44100, "format": "mp3"}, b"", "format must be one of"),
    ({"sample_rate": 44100, "format": "s16le"}, b"\0\0\0", "not a whole number"),
    ({"sample_rate": 44100, "format": "s16le"}, b"\0" * 65538, "larger than the limit"),
])
def test_stream_protocol_errors_end_the_session_with_a_message(server, start, frame, words):
    async def run() -> tuple[dict, int]:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/v1/stream") as ws:
            await ws.send(json.dumps(start))
            if frame:
                assert json.loads(await ws.recv())["event"] == "ready"
                await ws.send(frame)
            event = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return event, ws.close_code

    event, code = asyncio.run(run())
    assert event["event"] == "error" and words in event["message"] and code == 1008


# ---------------------------------------------------------------------- operations
def test_health_metrics_docs_and_page(server, music):
    assert server.call("POST", "/v1/recognize", *audio(music[f"clip:{STORED[0]}"]))[0] == 200
    status, health, _ = server.call("GET", "/healthz")
    assert status == 200 and health["status"] == "ok" and health["songs"] >= 2
    status, text, headers = server.call("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    sample = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+$')
    assert all(line.startswith("# ") or sample.match(line) for line in text.splitlines()), text
    served = int(re.search(r'dejavu_http_requests_total\{route="/v1/recognize",method="POST",status="200"\} (\d+)',
                           text).group(1))
    assert served >= 1
    assert int(re.search(r"dejavu_recognition_seconds_count (\d+)", text).group(1)) >= served
    assert re.search(r'dejavu_http_requests_total\{route="/healthz",method="GET",status="200"\} \d+', text)
    assert re.search(r"^dejavu_songs \d+$", text, re.M)
    status, docs, _ = server.call("GET", "/docs")
    assert status == 200 and "swagger" in docs.lower()
    status, schema, _ = server.call("GET", "/openapi.json")
    assert {"/v1/recognize", "/v1/songs", "/v1/songs/{song_id}", "/healthz", "/metrics"} <= set(schema["paths"])
    status, page, _ = server.call("GET", "/")
    assert status == 200 and 'id="listen"' in page and "/static/app.js" in page
    for asset in ("app.js", "capture-worklet.js", "style.css"):
        assert server.call("GET", f"/static/{asset}")[0] == 200
    assert server.call("GET", "/nothing-here")[1] == {"status": "error", "message": "Not Found"}
    assert server.call("PUT", "/v1/songs")[:2] == (405, {"status": "error", "message": "Method Not Allowed"})


def test_sigterm_lets_the_request_in_flight_finish(store_config, music, tmp_path):
    srv = Server(store_config, tmp_path)
    body = music[f"clip:{STORED[1]}"].read_bytes()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
            s.sendall(f"POST /v1/recognize HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:len(body) // 2])
            time.sleep(1.0)                         # the request is being handled: its body is awaited
            srv.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert srv.proc.poll() is None          # waiting for the request in flight
            s.sendall(body[len(body) // 2:])
            answer = s.makefile("rb").read().decode()   # the server closes after answering
        assert answer.startswith("HTTP/1.1 200")
        assert json.loads(answer.partition("\r\n\r\n")[2])["results"][0]["song_name"] == STORED[1]
        assert srv.proc.wait(30) == -signal.SIGTERM    # uvicorn re-raises the signal once it has shut down
    finally:
        srv.stop()
    log = srv.log.read_text()
    assert "Application shutdown complete" in log and "Traceback" not in log


def test_serve_refuses_bad_settings_in_one_line(store_config, tmp_path):
    bad = _with(store_config, tmp_path, max_upload_bytes=-5)
    out = run_cli("serve", "--config", str(bad), "--port", "1")
    assert out.returncode == 2 and out.stderr.decode().strip().count("\n") == 0
    assert "server.max_upload_bytes" in out.stderr.decode()
    out = run_cli("serve", "--port", "70000")
    assert out.returncode == 2 and b"--port" in out.stderr and b"Traceback" not in out.stderr


def test_serve_without_a_token_never_creates_a_store(tmp_path):
    out = run_cli("serve", "--port", "1", cwd=tmp_path, env={"DEJAVU_SERVER_TOKEN": ""}, timeout=60)
    err = out.stderr.decode().strip()
    assert out.returncode == 2 and "no database at 'dejavu.db'" in err and "\n" not in err, err
    assert not list(tmp_path.iterdir())


def test_the_cli_does_not_load_the_server_for_other_commands():
    code = ("import sys, dejavu.cli\ntry:\n    dejavu.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip().endswith("[]") and "serve" in out.stdout


@pytest.mark.parametrize("backend, start", [
    pytest.param("postgres", "start_postgres", marks=pytest.mark.skipif(
        not postgres_available(), reason="PostgreSQL server binaries not installed")),
    pytest.param("mysql", "start_mariadb", marks=pytest.mark.skipif(
        not mariadb_available(), reason="MariaDB server binaries not installed")),
])
def test_two_workers_over_a_database_server(backend, start, music, tmp_path):
    """Each worker opens its own connection: concurrent recognitions all answer right."""
    import dejavu.testing

    db = getattr(dejavu.testing, start)(tmp_path / backend)
    srv = None
    try:
        config = tmp_path / "config.json"
        config.write_text(json.dumps({**db.config(), "server": {"token": TOKEN}}))
        out = run_cli("--config", str(config), "--fingerprint", str(music[STORED[0]]), "--no-progress")
        assert out.returncode == 0, out.stderr
        srv = Server(config, tmp_path, None, "--workers", "2")
        clips = [music[f"clip:{STORED[0]}"], music[f"clip:{UNKNOWN}"]] * 6
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda clip: srv.call("POST", "/v1/recognize", *audio(clip)), clips))
        assert all(status == 200 for status, _, _ in answers)
        assert [[r["song_name"] for r in a["results"]][:1] for _, a, _ in answers] == [[STORED[0]], []] * 6
        assert srv.call("GET", "/healthz")[1] == {"status": "ok", "songs": 1}
        db.stop()                                   # the store goes away: 503, then back: 200
        for path, words in (("/healthz", "the store is not reachable"), ("/v1/songs", "the store failed")):
            status, answer, _ = srv.call("GET", path)
            assert status == 503 and answer["message"].startswith(words), answer
        db.restart()
        deadline = time.monotonic() + 30
        while srv.call("GET", "/v1/songs")[0] != 200:
            assert time.monotonic() < deadline, "the service did not reconnect"
            time.sleep(0.5)
    finally:
        if srv is not None:
            srv.stop()
        db.destroy()


# ---------------------------------------------------------------------- decoding bounds, settings
def test_decoding_is_bounded_in_length_and_time(music, tmp_path):
    from dejavu.server.uploads import UploadError, decode_upload

    flac = cut(music[UNKNOWN], tmp_path / "song.flac", 0, 60)
    for path in (music[UNKNOWN], flac):              # mpg123, ffmpeg
        samples = decode_upload(str(path), 11025, 3.0, 30.0)
        assert samples.dtype == np.float32 and samples.size == 3 * 11025
        whole = decode_upload(str(path), 11025, 600.0, 30.0)
        np.testing.assert_allclose(samples[:11025], whole[:11025], atol=1e-6)
    with pytest.raises(UploadError) as err:
        decode_upload(str(flac), 11025, 600.0, 0.01)
    assert err.value.status == 422 and "longer than 0.01 s" in err.value.message


def test_server_settings_are_validated():
    from dejavu.exceptions import ConfigError
    from dejavu.server.settings import ServerSettings, server_settings

    assert server_settings({}, environ={}) == ServerSettings()
    assert server_settings({"server": {"token": "a"}}, environ={"DEJAVU_SERVER_TOKEN": "b"}).token == "b"
    for section, words in [({"max_upload_bytes": 10}, "server.max_upload_bytes"), ({"tokn": "x"}, "unknown key"),
                           ({"protect_reads": True}, "needs a token"), ({"decode_timeout_seconds": "5"}, "a number"),
                           ({"token": ""}, "non-empty")]:
        with pytest.raises(ConfigError, match=words):
            server_settings({"server": section}, environ={})
