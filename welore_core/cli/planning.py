"""What `plan`, `compress`, `sweep` and `finetune` share: the target of a plan (--err, --k, --params, --size),
the calibration text (--calib) that ActSVD and the data-aware strategies need, and the spectra those
strategies plan on (whitened, from one calibration pass that ActSVD then reuses)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

import pandas as pd
import torch

from ..compression.apply import CompressionConfig
from ..compression.plan import (BYTES, CALIBRATED, DATA_AWARE, STRATEGIES, PlanConfig, fingerprint_note,
                                sensitivity_weights)
from ..compression.spectra import Calibration, Spectra, calibrated_fisher, calibrated_spectra
from ..errors import WeLoreError
from ..models import ModelSource, load_tokenizer, source_fingerprint
from .common import option, tqdm_progress


def target_options(p: argparse.ArgumentParser, k: bool = False) -> None:
    """--err / --params / --size (and --k): one target for the plan."""
    option(p, PlanConfig, "err", "target effective rank reduction in percent (30 = 30 %)")
    if k:
        option(p, PlanConfig, "k", "plan at this threshold instead of a target")
    option(p, PlanConfig, "params", "or: percent of the analysed layers' parameters removed (the peers' convention; "
                                    "compression then stores every layer the smaller way)")
    option(p, PlanConfig, "size_mib", "or: the whole model's size in MiB", flag="--size")
    option(p, PlanConfig, "size_dtype", "bytes per parameter of --size", choices=list(BYTES))
    option(p, PlanConfig, "strategy", "rank allocation (whitened and fisher need --calib; greedy uses it when given)",
           choices=STRATEGIES)
    p.add_argument("--sensitivity", help="greedy and fisher: weight layers by a `welore sensitivity -o DIR` result "
                                         "(DIR/sensitivity.csv)")


def has_target(args: argparse.Namespace) -> bool:
    """Is a target given? A parameter budget of 0 % is refused here: it would remove nothing."""
    if getattr(args, "params", None) is not None and args.params <= 0:
        raise WeLoreError(f"--params {args.params:g} removes nothing: give the percentage of parameters to remove, "
                          "in (0, 100)")
    return any(getattr(args, n, None) is not None for n in ("err", "k", "params", "size_mib"))


def warn_foreign_rankmap(data: dict[str, Any], source: ModelSource) -> None:
    """One warning line when a rank map was made on other weights than the model it is applied to."""
    if source.kind == "compressed":
        return
    note = fingerprint_note(data, source_fingerprint(source))
    if note:
        print(f"welore: warning: {note}", file=sys.stderr)


def budgeted(args: argparse.Namespace) -> bool:
    """A parameter or size budget: met when every layer is stored the smaller way (all-layers mode)."""
    return args.params is not None or args.size_mib is not None


def calibration_options(p: argparse.ArgumentParser, act_svd: bool = True) -> None:
    if act_svd:
        option(p, CompressionConfig, "act_svd", "activation-whitened SVD (SVD-LLM) instead of weight SVD")
    p.add_argument("--calib", help="calibration text for ActSVD and the data-aware strategies: a file, wikitext2, "
                                   "tinyshakespeare or hub:NAME")
    option(p, Calibration, "samples", "calibration windows", flag="--calib-samples", dest="calib_samples")
    option(p, Calibration, "seqlen", "tokens per calibration window", flag="--calib-seqlen", dest="calib_seqlen")


def calibration(args: argparse.Namespace, needed: bool = False, what: str = "") -> Calibration | None:
    """The Calibration of the options: None unless --act-svd or a data-aware strategy asks for one (`needed`,
    named by `what` in the refusal; default --strategy S); either without --calib is refused."""
    if not (getattr(args, "act_svd", False) or needed):
        return None
    if not args.calib:
        what = "--act-svd" if getattr(args, "act_svd", False) else what or f"--strategy {args.strategy}"
        raise WeLoreError(f"{what} needs --calib PATH (a text file for activation statistics)")
    return Calibration(args.calib, samples=args.calib_samples, seqlen=args.calib_seqlen)


def needs_calibration(args: argparse.Namespace) -> bool:
    """whitened and fisher always; greedy when --calib is given (else it spends the budget on the weight spectra)."""
    return args.strategy in CALIBRATED or (args.strategy == "greedy" and bool(args.calib))


def planning_basis(args: argparse.Namespace, source: ModelSource, model: torch.nn.Module,
                   weight: Spectra) -> tuple[Spectra | None, dict[str, torch.Tensor] | None, str]:
    """(whitened spectra of the layers `weight` analyses, Gram matrices, calibration digest) when the strategy
    plans on data, else Nones."""
    if args.strategy not in DATA_AWARE or not needs_calibration(args):
        return None, None, ""
    calib = calibration(args, needed=True)
    assert calib is not None
    tokenizer = load_tokenizer(source)
    spectra, grams, digest = calibrated_spectra(model, tokenizer, calib, progress=tqdm_progress("calibration"),
                                                like=weight)
    if args.strategy == "fisher":
        spectra = calibrated_fisher(model, tokenizer, calib, spectra, tqdm_progress("fisher"))
    return spectra, grams, digest


def greedy_weights(args: argparse.Namespace, layers: list[Any]) -> dict[str, float] | None:
    """Per-layer sensitivity weights for greedy from --sensitivity DIR (or the csv itself)."""
    if not getattr(args, "sensitivity", None):
        return None
    from pathlib import Path

    path = Path(args.sensitivity)
    path = path / "sensitivity.csv" if path.is_dir() else path
    try:
        rows = pd.read_csv(path).to_dict(orient="records")
    except (OSError, ValueError) as err:
        raise WeLoreError(f"sensitivity {path}: not a `welore sensitivity` result ({err})") from None
    if not rows or not {"group", "ppl_increase"} <= set(rows[0]):
        raise WeLoreError(f"sensitivity {path}: needs the group and ppl_increase columns of `welore sensitivity`")
    return sensitivity_weights(rows, layers)
