"""`welore export`, `welore card` and `welore generate`: the compressed model leaves the tool — a merged plain
checkpoint, the model card every folder carries, and its text beside the dense model's."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..compression.apply.card import write_card
from ..compression.apply.export import export_merged
from ..errors import WeLoreError
from ..evaluation import EvalConfig, card_measurements
from ..evaluation.generate import generate_from
from ..models import dense_source, placement, resolve_model
from .common import add_model, add_output, human, output_of, placement_options


def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    if not args.merged:
        raise WeLoreError("export writes a merged checkpoint: pass --merged (the factored folder itself already loads "
                          "with plain transformers, trust_remote_code=True)")
    source = resolve_model(args.model)
    if source.kind != "compressed":
        raise WeLoreError(f"{source.path} is not a compressed folder: there are no factors to merge (it is already a "
                          "plain checkpoint)")
    output = output_of(args.output, folder=True, model=args.model)
    assert output is not None
    result = export_merged(source, output)
    if human(args):
        print(f"{source.label} -> {output}: {result['merged_layers']} factored layers multiplied back, "
              f"{result['params_factored'] / 1e6:.2f}M -> {result['params_merged'] / 1e6:.2f}M parameters "
              f"({result['dtype']}): a plain checkpoint of the original architecture, as large as the dense model")
    return result


def cmd_card(args: argparse.Namespace) -> dict[str, Any]:
    source = resolve_model(args.model)
    if source.kind != "compressed":
        raise WeLoreError(f"{source.path} is not a compressed folder: model cards are written into compressed folders")
    measured = card_measurements(source.path)
    path = write_card(source.path, measured)
    if path is None:
        raise WeLoreError(f"{source.path / 'README.md'} was not written by WeLore Studio; move it away to write the "
                          "model card")
    if human(args):
        print(f"{path}: model card with {len(measured)} measurement(s) from the run registry")
    return {"card": str(path), "measurements": len(measured)}


def cmd_generate(args: argparse.Namespace) -> dict[str, Any]:
    source = resolve_model(args.model)
    device, dtype = placement(args.device, args.weights_dtype, "generation")
    show = human(args)
    runs = [(source, "compressed" if source.kind == "compressed" else "model")]
    if args.compare is not None:
        other = (resolve_model(args.compare) if args.compare else
                 dense_source(source, "pass --compare MODEL") if source.kind == "compressed" else None)
        if other is None:
            raise WeLoreError(f"{source.path} is not a compressed folder: name the model to compare with "
                              "(--compare MODEL)")
        runs.append((other, "dense"))
    results = []
    for model, role in runs:
        if show:
            print(f"--- {role}: {model.label} ---", flush=True)
            print(args.prompt, end="", flush=True)
        out = generate_from(model, args.prompt, args.max_new_tokens, device, dtype,
                            on_text=(lambda t: print(t, end="", flush=True)) if show else None)
        if show:
            print(f"\n[{out.tokens} tokens, {out.tokens_per_s:.1f} tokens/s]\n", flush=True)
        results.append({"role": role, "model": out.model, "text": out.text, "tokens": out.tokens,
                        "seconds": round(out.seconds, 3)})
    sys.stdout.flush()
    return {"prompt": args.prompt, "continuations": results}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("export", help="multiply a compressed folder's factors back: a plain checkpoint of the "
                                      "original architecture")
    add_model(p, "compressed folder")
    p.add_argument("--merged", action="store_true", help="write the merged checkpoint (the only export there is)")
    p.add_argument("-o", "--output", required=True, help="folder to write (new)")
    add_output(p)
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("card", help="rewrite a compressed folder's model card (README.md) with the registry's "
                                    "measurements of it")
    add_model(p, "compressed folder")
    add_output(p)
    p.set_defaults(run=cmd_card)

    p = sub.add_parser("generate", help="stream a greedy continuation of a prompt; --compare: the dense model's beside")
    add_model(p, "compressed folder or model (default: embedded SmolLM2-135M)")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most (default: 64)")
    p.add_argument("--compare", nargs="?", const="", default=None, metavar="SOURCE",
                   help="also continue with SOURCE (default: the dense model the compressed folder was made from)")
    placement_options(p, EvalConfig)
    add_output(p)
    p.set_defaults(run=cmd_generate)
