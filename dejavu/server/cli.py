"""``dejavu serve``: run the HTTP recognition service with uvicorn.

Imported only when the command is ``serve``, so ``dejavu --help`` never loads FastAPI.
"""
from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
import os
import sys
from typing import Sequence

log = logging.getLogger("dejavu")

EXIT_OK, EXIT_ERROR = 0, 2


def build_parser() -> argparse.ArgumentParser:
    from dejavu.cli import _Parser

    parser = _Parser(prog="dejavu serve",
                     description="Serve recognition over HTTP: POST /v1/recognize, WS /v1/stream, "
                                 "/v1/songs, /healthz, /metrics, API docs at /docs and a browser page at /.",
                     epilog="Limits and the token for the write routes are the configuration's 'server' "
                            "section; DEJAVU_SERVER_TOKEN overrides the token. See the README.")
    parser.add_argument("-c", "--config", metavar="PATH", help="JSON configuration file (default: ./dejavu.db)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes, each with its own store connection (default: 1)")
    parser.add_argument("--graceful-timeout", type=float, default=30.0, metavar="S",
                        help="on SIGTERM, seconds in-flight requests get to finish (default: 30; 0: no limit)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="errors only (no request log)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (the arguments after ``serve``), check the store, run the server."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error("--port must lie in 1..65535")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.graceful_timeout < 0:
        parser.error("--graceful-timeout must be >= 0")
    level = logging.ERROR if args.quiet else (logging.DEBUG if args.verbose else logging.INFO)
    logging.basicConfig(level=level, format="dejavu: %(message)s", stream=sys.stderr)
    missing = [name for name in ("fastapi", "uvicorn", "python_multipart") if importlib.util.find_spec(name) is None]
    if missing:
        log.error("dejavu serve needs the server extra (%s is missing): pip install 'PyDejavu[server]'", missing[0])
        return EXIT_ERROR
    import uvicorn

    from dejavu import Dejavu
    from dejavu.config import load_config, read_config_file
    from dejavu.exceptions import DejavuError
    from dejavu.server.app import ENV_SERVE_CONFIG
    from dejavu.server.settings import server_settings

    try:
        config = read_config_file(args.config) if args.config else load_config(None)
        settings = server_settings(config.raw)
        if settings.token is None:  # read-only service: never create a store (as the CLI's queries)
            from dejavu.cli_commands import require_store

            require_store(config)
        Dejavu(config).close()   # the store opens (and exists) before any worker starts
    except DejavuError as exc:
        log.error("%s", exc)
        return EXIT_ERROR
    if not _loopback(args.host):
        log.warning("binding %s: the service is reachable from other machines%s", args.host,
                    "" if settings.token else " (and has no token: its write routes are off)")
    os.environ[ENV_SERVE_CONFIG] = os.path.abspath(args.config) if args.config else ""
    uvicorn.run("dejavu.server.app:app_from_environment", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=logging.getLevelName(level).lower(),
                access_log=not args.quiet, timeout_graceful_shutdown=args.graceful_timeout or None)
    return EXIT_OK


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
