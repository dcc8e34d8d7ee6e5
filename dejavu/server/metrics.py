"""Service metrics in the Prometheus text exposition format (version 0.0.4).

Three families are all the service needs (requests by route and status, a latency
histogram, the catalogue size), so they are kept and written here (~70 lines) instead of
adding prometheus-client, whose multi-process mode would also need a shared directory.
Each worker process keeps its own counts: with ``--workers N`` a scrape sees one worker.
"""
from __future__ import annotations

import bisect
import threading
from typing import Iterable

#: Upper bounds (seconds) of the recognition latency histogram's buckets.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


class Metrics:
    """Thread-safe counters of one worker process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        self._buckets = [0] * len(LATENCY_BUCKETS)
        self._latency_sum = 0.0
        self._latency_count = 0

    def request(self, route: str, method: str, status: int) -> None:
        """Count one finished request (``route`` is the route's template, e.g. /v1/songs/{song_id})."""
        key = (route, method, str(status))
        with self._lock:
            self._requests[key] = self._requests.get(key, 0) + 1

    def recognition(self, seconds: float) -> None:
        """Record the latency of one recognition (decode + search), in seconds."""
        with self._lock:
            index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
            if index < len(self._buckets):
                self._buckets[index] += 1
            self._latency_sum += seconds
            self._latency_count += 1

    def render(self, songs: int | None) -> str:
        """The exposition text; ``songs`` is the catalogue size (None: the store did not answer)."""
        out = ["# HELP dejavu_http_requests_total HTTP requests and WebSocket sessions handled, "
               "by route template, method and status.",
               "# TYPE dejavu_http_requests_total counter"]
        with self._lock:
            for (route, method, status), n in sorted(self._requests.items()):
                out.append(f"dejavu_http_requests_total{_labels([('route', route), ('method', method), ('status', status)])} {n}")
            out += ["# HELP dejavu_recognition_seconds Time to decode and recognize one uploaded clip.",
                    "# TYPE dejavu_recognition_seconds histogram"]
            cumulative = 0
            for bound, n in zip(LATENCY_BUCKETS, self._buckets):
                cumulative += n
                out.append(f'dejavu_recognition_seconds_bucket{{le="{bound:g}"}} {cumulative}')
            out.append(f'dejavu_recognition_seconds_bucket{{le="+Inf"}} {self._latency_count}')
            out.append(f"dejavu_recognition_seconds_sum {self._latency_sum:.6f}")
            out.append(f"dejavu_recognition_seconds_count {self._latency_count}")
        if songs is not None:
            out += ["# HELP dejavu_songs Fingerprinted songs in the catalogue.", "# TYPE dejavu_songs gauge",
                    f"dejavu_songs {songs}"]
        return "\n".join(out) + "\n"
