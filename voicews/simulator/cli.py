"""voicews-call: the simulator's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from voicews import __version__
from voicews.audio.files import read_audio, write_wav
from voicews.simulator.call import simulate_calls
from voicews.simulator.events import describe
from voicews.simulator.spec import DEFAULT_CONTENT_TYPE, DTMF_DIGITS, CallResult, CallSpec

# -- command line --------------------------------------------------------------------------

log = logging.getLogger("voicews.simulator")


def _dtmf(value: str) -> tuple[str, float]:
    digit, sep, at = value.partition("@")
    try:
        seconds = float(at) if sep else 0.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected DIGIT@SECONDS, e.g. 5@1.5") from None
    if digit not in DTMF_DIGITS or seconds < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: expected DIGIT@SECONDS, e.g. 5@1.5")
    return digit, seconds


def _header(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r}: expected KEY=VALUE")
    return key, val


def _positive(kind):
    def parse(value: str):
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{value!r} must be positive")
        return number
    return parse


def build_parser(prog: str = "voicews-call") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Play the Vonage side of a call against an answer URL (or a socket "
        "URL): stream a sound file, send DTMF, record what comes back.",
        epilog="Exit status: 0 when every call completed cleanly, 1 otherwise, 2 on bad "
        "arguments.",
    )
    parser.add_argument("url", help="answer URL (http[s]://...), or a socket URL (ws[s]://...) "
                        "to skip the answer webhook")
    parser.add_argument("--play", metavar="FILE",
                        help="sound file the caller says (WAV, FLAC, OGG, MP3; resampled)")
    parser.add_argument("--record", metavar="FILE",
                        help="write what the call sends back to this WAV (with --calls N: "
                        "FILE-1.wav ... FILE-N.wav)")
    parser.add_argument("--dtmf", metavar="DIGIT@SECONDS", type=_dtmf, action="append",
                        default=[], help="press a key at a time into the call (repeatable)")
    parser.add_argument("--seconds", type=_positive(float),
                        help="call length (default: the file's length plus 1 s, or 3 s)")
    parser.add_argument("--calls", type=_positive(int), default=1,
                        help="concurrent calls (default 1)")
    parser.add_argument("--fast", action="store_true",
                        help="send frames without real-time pacing (for tests)")
    parser.add_argument("--method", choices=["GET", "POST"], default="GET", type=str.upper,
                        help="answer request method (POST sends a JSON body)")
    parser.add_argument("--signature-secret", metavar="SECRET",
                        default=os.environ.get("VONAGE_SIGNATURE_SECRET") or None,
                        help="sign webhooks and a 'vonage' socket handshake with this secret "
                        "(default: $VONAGE_SIGNATURE_SECRET, as the daemon reads it)")
    parser.add_argument("--event-url", metavar="URL",
                        help="post event webhooks here instead of the NCCO's eventUrl")
    parser.add_argument("--ws-host", metavar="HOST",
                        help="replace the host of the NCCO's socket and event URLs: "
                        "host:port, or ws://host:port to change the scheme too")
    parser.add_argument("--to", default=CallSpec.to, help="called number")
    parser.add_argument("--from", dest="from_", default=CallSpec.from_, help="caller's number")
    parser.add_argument("--content-type", default=None,
                        help="with a socket URL: the call's audio/l16;rate=N "
                        f"(default {DEFAULT_CONTENT_TYPE})")
    parser.add_argument("--header", metavar="KEY=VALUE", type=_header, action="append",
                        default=[], help="with a socket URL: a first-message header, e.g. "
                        "pipeline=echo (repeatable)")
    parser.add_argument("--events", action="store_true",
                        help="print the call's events as they happen (transcripts, speech "
                        "on/off, barge-in, dtmf), from the daemon's /events stream")
    parser.add_argument("--events-url", metavar="URL",
                        help="the daemon's /events (default: beside the call's socket)")
    parser.add_argument("--control-token", metavar="TOKEN",
                        default=os.environ.get("VOICEWS_CONTROL_TOKEN") or None,
                        help="the daemon's security.control_token, for --events "
                        "(default: $VOICEWS_CONTROL_TOKEN, as the daemon reads it)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="only the summary lines")
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    return parser


def _print_event(result: CallResult, record: dict) -> None:
    print(f"{result.label}: {describe(record)}", flush=True)


def _record_path(path: str, index: int, calls: int) -> Path:
    p = Path(path)
    return p if calls == 1 else p.with_name(f"{p.stem}-{index}{p.suffix or '.wav'}")


def main(argv: Sequence[str] | None = None, prog: str = "voicews-call") -> int:
    """The ``voicews-call`` console script (and ``voicews call``); returns the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    # PyJWT warns about short HMAC keys; the secret is whatever the daemon was given.
    warnings.filterwarnings("ignore", message="The HMAC key is")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    play, play_rate = None, 16000
    if args.play:
        try:
            play, play_rate = read_audio(args.play)
        except (OSError, RuntimeError) as exc:  # soundfile raises LibsndfileError(RuntimeError)
            parser.exit(2, f"voicews-call: cannot read {args.play}: {exc}\n")
    direct = args.url.startswith(("ws://", "wss://"))
    if not direct and not args.url.startswith(("http://", "https://")):
        parser.exit(2, f"voicews-call: {args.url!r} is not an http(s):// or ws(s):// URL\n")
    if not direct:  # the NCCO decides these: a value given here would be ignored
        for option, given in (("--header", args.header), ("--content-type", args.content_type)):
            if given:
                parser.exit(2, f"voicews-call: {option} applies to a socket URL (ws:// or "
                            "wss://) only; with an answer URL the NCCO sets the headers and "
                            "the content type\n")
    specs = [
        CallSpec(
            answer_url="" if direct else args.url,
            socket_uri=args.url if direct else None,
            content_type=args.content_type or DEFAULT_CONTENT_TYPE, headers=dict(args.header),
            play=play, play_rate=play_rate, seconds=args.seconds, dtmf=list(args.dtmf),
            fast=args.fast, method=args.method, signature_secret=args.signature_secret,
            event_url=args.event_url, ws_host=args.ws_host, to=args.to, from_=args.from_,
            label=f"call {i}" if args.calls > 1 else "call",
            events=args.events or bool(args.events_url), events_url=args.events_url,
            control_token=args.control_token, on_event=_print_event,
        )
        for i in range(1, args.calls + 1)
    ]
    try:
        results = asyncio.run(simulate_calls(specs))
    except KeyboardInterrupt:
        print("voicews-call: interrupted", file=sys.stderr)
        return 130
    for i, result in enumerate(results, 1):
        if args.record and result.rate:
            path = _record_path(args.record, i, args.calls)
            write_wav(path, result.received, result.rate)
            log.info("%s: wrote %s (%.2f s at %d Hz)", result.label, path,
                     len(result.received) / result.rate, result.rate)
        print(result.summary(), flush=True)
    failed = sum(not r.ok for r in results)
    if args.calls > 1:
        print(
            f"total: {len(results)} calls, {len(results) - failed} ok, {failed} failed, "
            f"frames sent {sum(r.frames_sent for r in results)} "
            f"received {sum(r.frames_received for r in results)}, "
            f"wrong-sized {sum(len(r.wrong_sized) for r in results)}",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
