"""What every `welore` command shares: options made from the config dataclasses (so no default is stated
twice), the MODEL argument, --json / -v, and the tqdm adapter of the core's progress callback."""
from __future__ import annotations

import argparse
import sys
import types
import typing
from dataclasses import MISSING, fields
from typing import Any, Sequence

from ..utils import Progress, check_output

if typing.TYPE_CHECKING:
    from pathlib import Path

MODEL_HELP = "model folder, compressed folder, .gguf, .safetensors(.index.json) or hub id (default: embedded SmolLM2-135M)"


def tqdm_progress(desc: str, unit: str = "layer") -> Progress:
    """Adapt the core's progress callback to a tqdm bar on stderr."""
    from tqdm import tqdm

    bar: list[Any] = []

    def update(done: int, total: int, name: str) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False))
        bar[0].n = done
        bar[0].set_postfix_str(name[-40:], refresh=False)
        bar[0].refresh()
        if done >= total:
            bar[0].close()

    return update


def add_model(p: argparse.ArgumentParser, help: str = MODEL_HELP) -> None:
    p.add_argument("model", nargs="?", default=None, help=help)


def add_output(p: argparse.ArgumentParser) -> None:
    """--json (one JSON object as the last line of stdout) and -v (human-readable output even with --json)."""
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="human-readable output even with --json")


def human(args: argparse.Namespace) -> bool:
    """Print the human-readable report (always, unless --json without -v)."""
    return not args.json or args.verbose


def _field_type(cls: type, name: str) -> Any:
    """The option type of a dataclass field: its annotation without `| None`."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def option(p: argparse.ArgumentParser, cls: type, name: str, help: str, flag: str | None = None,
           choices: Sequence[Any] | None = None, default: Any = MISSING, dest: str | None = None) -> None:
    """`--name` for field `name` of config dataclass `cls`, with the field's default and type (a bool field
    becomes a switch); `default` overrides the field's default for this command only, `dest` names the
    attribute when two configs share a field name."""
    field = next(f for f in fields(cls) if f.name == name)
    value = default if default is not MISSING else field.default
    flag = flag or "--" + name.replace("_", "-")
    if _field_type(cls, name) is bool:
        p.add_argument(flag, dest=dest or name, action="store_false" if value else "store_true", help=help)
        return
    shown = "" if value is None or value == "" else f" (default: {value})"
    p.add_argument(flag, dest=dest or name, type=_field_type(cls, name), default=value, choices=choices,
                   help=help.replace("%", "%%") + shown)


def placement_options(p: argparse.ArgumentParser, cls: type) -> None:
    """--device and --weights-dtype of a config that loads a model."""
    from ..models import WEIGHT_DTYPES

    option(p, cls, "device", "auto (cuda when present), cpu, cuda[:N]")
    option(p, cls, "weights_dtype", "dtype the weights are loaded in; auto = bfloat16 on a GPU, float32 on the CPU",
           choices=WEIGHT_DTYPES)


def config_from(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """An instance of `cls` from the options `option` added (fields without an option keep their default)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if f.name not in given and hasattr(args, f.name)}
    return cls(**values, **given)


def output_of(path: str | None, folder: bool, model: str | None | bool = False, flag: str = "-o") -> "Path | None":
    """The checked `-o` path of a command (None when not given), before any work: refused at or inside the source
    model `model` resolves to (pass False for a command without one), as the wrong kind of entry, or where
    nothing can be created."""
    if path is None:
        return None
    from ..models import resolve_model

    protected = () if model is False else resolve_model(model or None).protected()
    return check_output(path, folder, protected, what=f"output ({flag})")
