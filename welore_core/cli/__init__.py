"""`welore`: the command-line face of welore_core (a thin layer: parse, call the core, print).

Every command takes an optional MODEL (default: the embedded SmolLM2-135M-Instruct) and `--json`, which
prints one JSON object as the last line of stdout. Errors are one line on stderr and exit status 2.
One module per command group: `analyse` (spectra, plan, validate, prepare), `compress`, `evaluate`
(eval, sweep, sensitivity), `finetune`, `dynamics`; `common` holds what they share.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from typing import Any

from ..errors import WeLoreError
from . import analyse, compress, dynamics, evaluate, finetune
from .common import tqdm_progress

__all__ = ["build_parser", "main", "tqdm_progress"]


class UsageError(Exception):
    """A command line argparse cannot parse: reported as one `welore: error:` line like every other error."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> typing.NoReturn:
        command = self.prog.removeprefix("welore").strip()
        raise UsageError(f"{command}: {message}" if command else message)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="welore", description="WeLore: where an LLM is low-rank, and how to compress it")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (analyse, compress, evaluate, finetune, dynamics):
        group.register(sub)
    return parser


def _fail(message: str, json_wanted: bool) -> int:
    print(f"welore: error: {message}", file=sys.stderr)
    if json_wanted:
        print(json.dumps({"error": message}))
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as err:
        return _fail(str(err), "--json" in argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # its warnings are not ours to show; no import here
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own bars only: errors stay one line
    try:
        result = args.run(args)
    except (WeLoreError, OSError) as err:
        message = str(err) if isinstance(err, WeLoreError) else f"{type(err).__name__}: {err}"
        return _fail(message, bool(getattr(args, "json", False)))
    except KeyboardInterrupt:
        print("welore: interrupted (finished layers are cached; run again to resume)", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, default=_json_default))
    return 0


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
