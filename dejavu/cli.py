"""The ``dejavu`` command line (thin: parse, call the library, print).

Exit status: 0 = success / matched, 1 = no match (or some files failed), 2 = error.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from typing import Any, Sequence

from dejavu.config import DEFAULT_SQLITE_PATH, ENV_DATABASE_PASSWORD, ENV_DATABASE_URL
from dejavu.quoting import quote

log = logging.getLogger("dejavu")

EXIT_OK, EXIT_NO_MATCH, EXIT_ERROR = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage + one line, exit 2 (no traceback)
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dejavu",
        description="Dejavu: audio fingerprinting and recognition. Fingerprint songs into a "
                    "database, then name the song (and the position in it) of a clip.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"""database:
  Without --config or --db PATH, an embedded SQLite database ./{DEFAULT_SQLITE_PATH} in the
  current directory is used; commands that only read never create it. A config file is
  the original dejavu's JSON, e.g.
    {{"database_type": "sqlite", "database": {{"path": "fp.db"}}}}
    {{"database_type": "postgres", "database": {{"host": "127.0.0.1", "user": "dejavu",
      "password": "secret", "database": "dejavu"}}}}
  {ENV_DATABASE_URL} (postgresql://..., mysql://..., sqlite:///path) overrides the
  database settings and {ENV_DATABASE_PASSWORD} the password.

examples:
  dejavu --fingerprint ~/Music mp3 flac      fingerprint a folder (recursively)
  dejavu --fingerprint song.mp3              fingerprint one file
  dejavu --recognize file clip.wav           print the match as JSON
  dejavu --recognize file clips/ -j 2        one JSON line per clip, with its path
  dejavu --fingerprint -- -intro.mp3         a file name starting with '-' (or ./-intro.mp3)
  dejavu --recognize mic 10 --until-match    listen up to 10 s, stop at the first match
  dejavu --monitor show.mp3                  one JSON line per song heard (start/end s)
  arecord -f S16_LE -r 44100 -c 2 -t raw | dejavu --monitor - --format s16le --rate 44100 --channels 2
  dejavu --list                              list fingerprinted songs
  dejavu serve --port 8000                   HTTP recognition service and browser page
                                             (pip install 'PyDejavu[server]'; dejavu serve --help)
  dejavu --rebuild old.db --config new.json  fingerprint old.db's songs again, from their files,
                                             into new.json's store (the current format)

exit status: 0 matched / done, 1 no match / some files failed, 2 error""")
    parser.add_argument("-c", "--config", metavar="PATH",
                        help="JSON configuration file (default: embedded SQLite ./%s)" % DEFAULT_SQLITE_PATH)
    parser.add_argument("--db", metavar="PATH", help="use the SQLite store PATH (instead of the config's database)")
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("-f", "--fingerprint", nargs="+", metavar=("PATH", "EXT"),
                         help="fingerprint a file, or a directory and the extensions to take "
                              "(e.g. 'mp3 wav'; with or without dots). Files already fingerprinted "
                              "(same SHA1) are skipped")
    actions.add_argument("-r", "--recognize", nargs="+", metavar=("SOURCE", "ARG"),
                         help="'file PATH' recognizes a file; 'file PATH PATH...' or 'file FOLDER' many "
                              "(one JSON line each, with its path; -j N processes); 'mic SECONDS' records "
                              "from the microphone. Prints the result as JSON")
    actions.add_argument("--list", action="store_true", help="list the fingerprinted songs as JSON lines")
    actions.add_argument("--list-devices", action="store_true",
                         help="list the audio input devices as JSON lines (index, name, channels, "
                              "default_sample_rate); choose one with the config's microphone.device")
    actions.add_argument("--monitor", metavar="SOURCE",
                         help="report the known songs in a long stream, one JSON line per song as it "
                              "ends: SOURCE is a file, a URL, '-' (stdin) or 'mic'")
    actions.add_argument("--delete", nargs="+", type=int, metavar="SONG_ID", help="delete songs by id")
    actions.add_argument("--rename", nargs=2, metavar=("SONG_ID", "NAME"), help="give a song a new name")
    actions.add_argument("--stats", action="store_true", help="print database statistics as JSON")
    actions.add_argument("--rebuild", metavar="SOURCE",
                         help="fingerprint every song of the store SOURCE (an SQLite file, a JSON config "
                              "file or a database URL; only read, whatever its format or settings) again "
                              "from the file it was fingerprinted from, keeping its name, into the "
                              "configured store, which must be another one. A song whose file is gone, "
                              "unreadable or changed is named on stderr (exit status 1)")
    actions.add_argument("--export", metavar="FILE",
                         help="write every song of the store, fingerprints included, to the archive FILE "
                              "(to move a catalogue to another store without decoding the audio again)")
    actions.add_argument("--import", dest="import_file", metavar="FILE",
                         help="add the songs of an archive made by --export to the configured store "
                              "(songs already stored are skipped; the fingerprint settings must match)")
    parser.add_argument("--until-match", action="store_true",
                        help="with --recognize mic: stop listening at the first match")
    parser.add_argument("--window", type=float, metavar="S",
                        help="with --monitor: seconds recognized at a time (default: config, 10)")
    parser.add_argument("--hop", type=float, metavar="S",
                        help="with --monitor: seconds between windows (default: config, 5)")
    parser.add_argument("--format", metavar="FMT", dest="input_format",
                        help="with --monitor: input format for ffmpeg, e.g. s16le for raw PCM")
    parser.add_argument("--rate", type=int, metavar="HZ", help="with --monitor: input sample rate (raw PCM)")
    parser.add_argument("--channels", type=int, metavar="N", help="with --monitor: input channels (raw PCM)")
    parser.add_argument("-n", "-j", "--nprocs", type=int, default=None, metavar="N",
                        help="worker processes for --fingerprint, --rebuild and --recognize file "
                             "PATH... (default: CPU count)")
    parser.add_argument("--cluster", metavar="ADDRESS",
                        help="with --fingerprint DIR: decode and fingerprint on the Dask cluster whose "
                             "scheduler is at ADDRESS (tcp://HOST:8786; needs pip install 'PyDejavu[dist]')")
    parser.add_argument("--name", metavar="NAME", help="song name for --fingerprint FILE "
                                                       "(default: file name without extension)")
    parser.add_argument("--strict", action="store_true",
                        help="with --fingerprint: refuse (do not store) a file decoded short of the length "
                             "its header declares, or whose decoder reported errors; without it such a "
                             "file is stored with a warning (config: \"strict_decoding\": true)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="errors only")
    parser.add_argument("--version", action="version", version=f"dejavu {_version()}")
    return parser


def _version() -> str:
    from dejavu import __version__

    return __version__


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _fingerprint(djv: Any, args: argparse.Namespace) -> int:
    if args.strict:
        djv.cfg = replace(djv.cfg, strict_decoding=True)
    target, *exts = args.fingerprint
    progress = _commands().show_progress(args)
    if os.path.isdir(target):
        if not exts:
            log.error("%s is a directory: give the extensions to fingerprint, e.g. --fingerprint %s mp3",
                      quote(target), quote(target))
            return EXIT_ERROR
        report = djv.fingerprint_directory(target, exts, args.nprocs, progress=progress, cluster=args.cluster)
    else:
        if exts:
            log.error("%s is not a directory (extensions are only for directories)", quote(target))
            return EXIT_ERROR
        from dejavu.logic.decoder import check_file

        check_file(target)  # DecodeError: missing, a symlink loop, unreadable...
        report = djv.fingerprint_files([target], 1, song_names=[args.name])
    if not (report.fingerprinted or report.skipped or report.failed):
        log.error("no files ending in %s under %s", " or ".join(f".{e.lstrip('.')}" for e in exts), quote(target))
        return EXIT_NO_MATCH
    log.info("fingerprinted %d, skipped %d (already in the database), failed %d%s",
             len(report.fingerprinted), len(report.skipped), len(report.failed),
             f"; {len(report.damaged)} of those fingerprinted truncated or damaged" if report.damaged else "")
    return EXIT_OK if report.ok else EXIT_NO_MATCH


def _rebuild(config: Any, args: argparse.Namespace) -> int:
    from dejavu import Dejavu
    from dejavu.database.catalogue import refuse_same_store, source_config

    source = source_config(args.rebuild)
    refuse_same_store(source, config)  # before opening: the settings may differ
    with Dejavu(config) as djv:
        report = djv.rebuild_from(source, args.nprocs, progress=_commands().show_progress(args))
    log.info("rebuilt %d of %d song(s), skipped %d (already in the database), could not rebuild %d",
             report.rebuilt, report.songs, report.skipped, report.failed)
    return EXIT_OK if report.ok else EXIT_NO_MATCH


def _transfer(djv: Any, args: argparse.Namespace) -> int:
    """--export / --import: move a catalogue through an archive file, with a progress bar."""
    path, export = (args.export, True) if args.export else (args.import_file, False)
    bar = None
    if _commands().show_progress(args):
        from tqdm import tqdm

        bar = tqdm(total=djv.db.get_num_songs() if export else None, unit="song", desc="exporting" if export else "importing", file=sys.stderr)
    try:
        if export:
            report = djv.export_catalogue(path, bar.update if bar else None)
            log.info("exported %d songs (%d fingerprints) to %s", report.songs, report.rows, quote(path))
        else:
            report = djv.import_catalogue(path, bar.update if bar else None)
            log.info("imported %d songs (%d fingerprints); %d already in the database", report.songs,
                     report.rows, report.skipped)
    except OSError as exc:
        log.error("%s: %s", quote(path), (exc.strerror or str(exc)).lower())
        return EXIT_ERROR
    finally:
        if bar is not None:
            bar.close()
    return EXIT_OK


def _check_recognize(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Reject malformed --recognize arguments before touching the database."""
    many = len(args.recognize) > 2 and args.recognize[0].lower() == "file"
    if len(args.recognize) != 2 and not many:
        parser.error("--recognize takes SOURCE ARG: 'file PATH...' or 'mic SECONDS'")
    source, arg = args.recognize[:2]
    if source.lower() in ("mic", "microphone"):
        try:
            if float(arg) <= 0:
                raise ValueError
        except ValueError:
            parser.error(f"--recognize mic takes a positive number of seconds, got {arg!r}")
    elif source.lower() != "file":
        parser.error(f"unknown --recognize source {source!r} (use 'file' or 'mic')")


def _recognize(djv: Any, args: argparse.Namespace) -> int:
    source, *paths = args.recognize
    if source.lower() == "file" and (len(paths) > 1 or os.path.isdir(paths[0])):
        return _commands().recognize_many(djv, paths, args.nprocs)
    arg = paths[0]
    if source.lower() == "file":
        from dejavu.logic.recognizer.file_recognizer import FileRecognizer

        result = djv.recognize(FileRecognizer, arg)
    else:
        from dejavu.logic.recognizer.microphone_recognizer import MicrophoneRecognizer

        result = djv.recognize(MicrophoneRecognizer, seconds=float(arg), until_match=args.until_match)
    _emit(result)
    return EXIT_OK if result["results"] else EXIT_NO_MATCH


def _check_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Reject options given without the action they modify."""
    mic = bool(args.recognize) and args.recognize[0].lower() in ("mic", "microphone")
    if args.until_match and not mic:
        parser.error("--until-match goes with --recognize mic SECONDS")
    for name in ("window", "hop", "input_format", "rate", "channels"):
        if getattr(args, name) is not None and not args.monitor:
            parser.error(f"--{name.replace('input_', '')} goes with --monitor")
    if args.strict and not args.fingerprint:
        parser.error("--strict goes with --fingerprint")
    if args.cluster and not args.fingerprint:
        parser.error("--cluster goes with --fingerprint DIR EXT")
    for name in ("window", "hop", "rate", "channels"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be positive")


def _list_devices() -> int:
    from dejavu.logic.microphone import list_input_devices

    devices = list_input_devices()
    for device in devices:
        _emit(device)
    if not devices:
        log.error("no audio input device found")
    return EXIT_OK if devices else EXIT_NO_MATCH


def _monitor(djv: Any, args: argparse.Namespace) -> int:
    input_args: list[str] = []
    for flag, value in (("-f", args.input_format), ("-ar", args.rate), ("-ac", args.channels)):
        if value is not None:
            input_args += [flag, str(value)]
    found = 0
    for segment in djv.monitor(args.monitor, args.window, args.hop, input_args=input_args):
        _emit(segment.to_dict())
        found += 1
    return EXIT_OK if found else EXIT_NO_MATCH


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:  # the HTTP service (extra "server"): imported only for this command
        from dejavu.server.cli import main as serve

        return serve(argv[1:])
    parser = build_parser()
    commands = _commands()
    args = parser.parse_args(commands.paths_after_double_dash(argv))
    commands.setup_logging(logging.ERROR if args.quiet else (logging.DEBUG if args.verbose else logging.INFO))
    if not (args.fingerprint or args.recognize or args.list or args.delete or args.stats or args.rename
            or args.list_devices or args.monitor or args.rebuild or args.export or args.import_file):
        parser.print_help()
        return EXIT_OK
    if args.recognize:
        _check_recognize(args, parser)
    _check_options(args, parser)
    from dejavu import Dejavu
    from dejavu.exceptions import DejavuError

    try:
        if args.list_devices:
            return _list_devices()
        config = commands.configuration(args)
        existing = commands.needs_a_store(args)
        if existing:
            commands.require_store(config)
        if args.rebuild:
            return _rebuild(config, args)
        with Dejavu(config) as djv:
            if existing:
                commands.hint_if_empty(djv)
            if args.fingerprint:
                return _fingerprint(djv, args)
            if args.recognize:
                return _recognize(djv, args)
            if args.monitor:
                return _monitor(djv, args)
            if args.export or args.import_file:
                return _transfer(djv, args)
            if args.list:
                for song in djv.get_fingerprinted_songs():
                    _emit(song)
                return EXIT_OK
            if args.delete:
                return commands.delete(djv, args.delete)
            if args.rename:
                return commands.rename(djv, *args.rename)
            _emit(djv.stats())
            return EXIT_OK
    except DejavuError as exc:
        log.error("%s", exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # a bug or an unforeseen condition: one line, details with -v
        log.debug("unexpected error", exc_info=True)
        log.error("unexpected error: %s: %s%s", type(exc).__name__, exc,
                  "" if args.verbose else " (run with -v for details)")
        return EXIT_ERROR


def _commands() -> Any:
    """:mod:`dejavu.cli_commands` (imported when first needed: it imports this module)."""
    from dejavu import cli_commands

    return cli_commands


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
