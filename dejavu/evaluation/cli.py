"""``dejavu-eval`` (also ``python -m dejavu.evaluation``): measure recognition accuracy.

Thin layer over :mod:`dejavu.evaluation.run`: parse the arguments, run the
evaluation, draw the plots, print the Markdown table on stdout.  Progress and
warnings go to stderr.  Exit status: 0 done, 2 bad arguments or the run failed.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn, Sequence

from dejavu.evaluation.settings import DEFAULT_DECODE_RATE, DEFAULT_DISTRACTOR_SECONDS, DEFAULT_EXTENSIONS, Settings
from dejavu.exceptions import DejavuError, EvaluationError

PROG = "dejavu-eval"
EXIT_OK, EXIT_ERROR = 0, 2
log = logging.getLogger("dejavu.evaluation")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fingerprint a folder of songs, then recognize random clips of them, clean "
                    "and degraded, and report song / offset accuracy, false positives on songs "
                    "that are not in the database, confidences and time to match.",
        epilog="""conditions (see dejavu.evaluation.degrade):
  clean mic pink0 white10 bandlimit reverb mp3_64 sr8000 sr16000 sr22050
  speed+1 speed-1 speed+3 speed-3 speed+5 speed-5 babble
  or parameterised: pink:SNR white:SNR babble:SNR speed:FACTOR sr:HZ mp3:KBPS

outputs in --results: report.json (settings, songs, summary per condition x length),
  clips.jsonl (one record per query), eval.db (the throwaway database, unless --config
  names one), accuracy_vs_length.png, confidence_histograms.png, time_vs_length.png.
  The Markdown table is printed on stdout.

notes:
  eval.db is recreated on every run, and reused as it is with --no-ingest (which needs a
  database built with the same fingerprint parameters). Songs are matched to database
  entries by the SHA1 of their file, never by name. A match's offset is correct within
  0.1 s of the clip's start in the original song, or where the song's own audio at the
  reported offset correlates > 0.9 with the audio at the start (a repeated passage).
  babble mixes in a negative song (or another song when there are none).

examples:
  dejavu-eval --secs 5 --seed 42 --results ./results ~/Music
  dejavu-eval --lengths 1 2 5 10 --conditions clean mic pink0 speed+3 \\
      --holdout 0.2 --clips-per-song 3 --seed 42 --results /tmp/eval ~/Music
  dejavu-eval --lengths 5 --distractors 10000 --seed 42 --results /tmp/eval ~/Music""")
    p.add_argument("audio_dir", metavar="AUDIO_DIR", nargs="?",
                   help="folder of songs (searched recursively)")
    p.add_argument("-sec", "--secs", "--seconds", dest="secs", type=int, default=5, metavar="N",
                   help="clip lengths 1..N seconds (default 5)")
    p.add_argument("--lengths", nargs="+", metavar="S",
                   help="clip lengths in seconds, e.g. '1 2 5 10' (overrides --secs)")
    p.add_argument("-k", "--clips-per-song", type=int, default=1, metavar="K",
                   help="random clips per song and length (default 1)")
    p.add_argument("--conditions", nargs="+", default=["clean"], metavar="NAME",
                   help="degradations to apply to every clip (default: clean)")
    p.add_argument("-pad", "--padding", type=float, default=10.0, metavar="S",
                   help="keep clips S seconds away from the start and end of songs (default 10; "
                        "shrinks for short songs)")
    p.add_argument("-sd", "--seed", type=int, default=None, metavar="N",
                   help="random seed: the same seed gives the same split, clips and degradations "
                        "(default: random, printed and stored in report.json)")
    p.add_argument("--negatives", metavar="DIR",
                   help="songs NOT in the database: their clips measure false positives")
    p.add_argument("--holdout", type=float, default=0.0, metavar="F",
                   help="leave a fraction F of AUDIO_DIR's songs (chosen by seed) out of the "
                        "database and use them as negatives")
    p.add_argument("-res", "--results", "--results-folder", dest="results", default="./dejavu_test_results",
                   metavar="DIR", help="where the report, plots and throwaway database go "
                                       "(default ./dejavu_test_results)")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="dejavu JSON configuration (database and/or fingerprint and matching "
                        "parameters); without a database section, the throwaway SQLite database "
                        "DIR/eval.db is used")
    p.add_argument("--no-ingest", action="store_true",
                   help="do not fingerprint: the database is already built (songs it lacks "
                        "become negatives)")
    p.add_argument("--distractors", type=int, default=0, metavar="N",
                   help="after ingesting, add N synthetic songs whose hashes follow the database "
                        "songs' hash distribution (as many rows per audio second, uniform song and "
                        "offset): a catalogue of realistic size; a match to one is a wrong answer "
                        "(default 0)")
    p.add_argument("--distractor-seconds", type=float, default=DEFAULT_DISTRACTOR_SECONDS, metavar="S",
                   help=f"length of a distractor song (default {DEFAULT_DISTRACTOR_SECONDS:g})")
    p.add_argument("-temp", "--temp", "--temp-folder", dest="temp", metavar="DIR",
                   help="save every degraded query clip there as WAV (to listen to failures)")
    p.add_argument("-lf", "--log-file", metavar="FILE", help="log each clip's outcome to FILE")
    p.add_argument("-l", "--log", action="store_true",
                   help="log each clip's outcome to DIR/clips.log (when --log-file is not given)")
    p.add_argument("--extensions", nargs="+", default=list(DEFAULT_EXTENSIONS), metavar="EXT",
                   help="audio file extensions to take (default: common audio formats)")
    p.add_argument("-n", "--nprocs", type=int, default=None, metavar="N",
                   help="processes for fingerprinting (default: CPU count)")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="processes recognizing clips (default 1: timings are not disturbed)")
    p.add_argument("--decode-rate", type=int, default=DEFAULT_DECODE_RATE, metavar="HZ",
                   help=f"rate songs are decoded at before degradation (default {DEFAULT_DECODE_RATE})")
    p.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    p.add_argument("-v", "--verbose", action="store_true", help="debug output")
    p.add_argument("-q", "-sl", "--quiet", "--silent", dest="quiet", action="store_true",
                   help="warnings and errors only")
    return p


def _take_folder(args: argparse.Namespace) -> None:
    """``--conditions clean mic ~/Music`` swallows the folder: take it back."""
    if args.audio_dir is not None:
        return
    for name in ("conditions", "lengths", "extensions"):
        values = getattr(args, name)
        if values and len(values) > 1 and os.path.isdir(values[-1]):
            args.audio_dir = values.pop()
            return


def _lengths(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[float]:
    if args.lengths is None:
        if args.secs < 1:
            parser.error("--secs must be at least 1")
        return [float(n) for n in range(1, args.secs + 1)]
    try:
        return sorted({float(v) for v in args.lengths})
    except ValueError:
        parser.error(f"--lengths takes numbers of seconds, got {' '.join(args.lengths)!r}")


def settings_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    """Check the arguments argparse cannot check, and build the Settings."""
    _take_folder(args)
    if args.audio_dir is None:
        parser.error("the following arguments are required: AUDIO_DIR")
    lengths = _lengths(args, parser)
    settings = Settings(
        audio_dir=args.audio_dir, results_dir=args.results, lengths=lengths,
        conditions=list(args.conditions), clips_per_song=args.clips_per_song, padding=args.padding,
        seed=args.seed, config_path=args.config, negatives_dir=args.negatives, holdout=args.holdout,
        ingest=not args.no_ingest, temp_dir=args.temp, extensions=list(args.extensions),
        nprocs=args.nprocs, jobs=args.jobs, decode_rate=args.decode_rate,
        distractors=args.distractors, distractor_seconds=args.distractor_seconds)
    try:
        settings.validate()
    except EvaluationError as exc:
        parser.error(str(exc))
    if args.config and not os.path.isfile(args.config):
        parser.error(f"--config {args.config}: no such file")
    return settings


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose else logging.INFO)
    logging.basicConfig(level=level, format=f"{PROG}: %(message)s", stream=sys.stderr)
    from dejavu.evaluation.run import clip_log

    clip_log.propagate = False
    clip_log.setLevel(logging.INFO)
    path = args.log_file or (os.path.join(args.results, "clips.log") if args.log else None)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        handler = logging.FileHandler(path, mode="w", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        clip_log.addHandler(handler)
    else:
        clip_log.addHandler(logging.NullHandler())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = settings_from_args(args, parser)
    from dejavu.evaluation.report import REPORT_FILE, load_clips, save_report
    from dejavu.evaluation.run import run_evaluation
    from dejavu.evaluation.summary import markdown_table

    try:
        _setup_logging(args)
        report = run_evaluation(settings)
    except DejavuError as exc:  # EvaluationError included
        log.error("%s", exc)
        return EXIT_ERROR
    except OSError as exc:
        log.error("%s: %s", getattr(exc, "filename", None) or "error", exc.strerror or exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    if not args.no_plots:
        try:
            from dejavu.evaluation.plots import write_plots

            clips = load_clips(settings.results_dir)
            paths = write_plots(report.summary, clips, settings.conditions, settings.results_dir)
            report.files["plots"] = [os.path.basename(p) for p in paths]
            save_report(report, settings.results_dir)
        except ImportError:
            log.warning("matplotlib is not installed: no plots (pip install matplotlib)")
    t = report.timings
    distractors = (f", {settings.distractors} distractor songs {t['distractor_build_seconds']:.1f} s"
                   if settings.distractors else "")
    log.info("%d queries on %.0f s of audio: fingerprinting %.1f s%s, evaluation %.1f s; report in %s",
             t["queries"], t["audio_seconds"], t["ingest_seconds"], distractors, t["evaluate_seconds"],
             os.path.join(settings.results_dir, REPORT_FILE))
    sys.stdout.write(markdown_table(report.summary) + "\n")
    sys.stdout.flush()
    return EXIT_OK


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
