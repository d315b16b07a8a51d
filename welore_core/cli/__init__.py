"""`welore`: the command-line face of welore_core (a thin layer: parse, call the core, print).

Every command takes an optional MODEL (default: the embedded SmolLM2-135M-Instruct) and `--json`, which
prints one JSON object as the last line of stdout. Errors are one line on stderr and exit status 2.
One module per command group: `analyse` (spectra, plan, validate, prepare), `compress`, `evaluate`
(eval, sweep, sensitivity), `finetune`, `sample`, `ship` (export, card, generate), `dynamics`; `common` holds what they share.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import typing
import warnings
from typing import Any

from ..errors import WeLoreError, WeLoreWarning
from ..utils import disk_full, os_error_message
from . import analyse, compress, dynamics, evaluate, finetune, sample, ship
from .common import tqdm_progress

__all__ = ["build_parser", "main", "tqdm_progress"]
_PYTHON_SHOWWARNING = warnings.showwarning


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
    for group in (analyse, compress, evaluate, finetune, sample, ship, dynamics):
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
    if "transformers" in sys.modules:  # imported before us (a test, a notebook): the variable came too late
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    wants_json = bool(getattr(args, "json", False))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", WeLoreWarning)
            warnings.showwarning = _show_warning
            result = args.run(args)
        if args.json:
            print(json.dumps(result, default=_json_default))
        sys.stdout.flush()
    except BrokenPipeError:  # `welore plan | head -2`: the reader has gone; stop quietly, as Unix tools do
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe
    except (WeLoreError, OSError) as err:
        message = str(err) if isinstance(err, WeLoreError) else os_error_message(err)
        return _fail(message, wants_json)
    except KeyboardInterrupt:
        print("welore: interrupted (finished layers are cached; run again to resume)", file=sys.stderr)
        return 130
    except Exception as err:
        if disk_full(err):  # a library's own wrapping of ENOSPC that no write site turned into one line
            return _fail(f"no space left on the device ({type(err).__name__}: {err})", wants_json)
        raise
    return 0


def _show_warning(message: Warning | str, category: type[Warning], *rest: Any, **kwargs: Any) -> None:
    """The core's WeLoreWarnings as one `welore: warning:` line each; other libraries' warnings as Python shows them."""
    if issubclass(category, WeLoreWarning):
        print(f"welore: warning: {message}", file=sys.stderr)
    else:
        _PYTHON_SHOWWARNING(message, category, *rest, **kwargs)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
