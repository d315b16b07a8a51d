"""The model card every compressed folder carries (`README.md` with Hugging Face front matter): the plan, how to
load the folder, and the measurements of its weights (given by the caller: `evaluation.card_measurements`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...models import EMBEDDED_LABEL, read_manifest
from ...utils import atomic_write_text, read_json

CARD = "README.md"
CARD_MARK = "<!-- written by WeLore Studio: `welore card DIR` rewrites it -->"
HUB_IDS = {EMBEDDED_LABEL: "HuggingFaceTB/SmolLM2-135M-Instruct"}  # local names whose hub id is known


def _plan_rows(folder: Path) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, str]]]:
    manifest = read_manifest(folder)
    rankmap = read_json(folder / "rankmap.json", "rank map")
    layers = rankmap.get("layers", [])
    target = ("ERR " + f"{rankmap['target_err']:g} %" if rankmap.get("target_err") is not None else
              f"{rankmap['target_params']:g} % of parameters removed" if rankmap.get("target_params") is not None else
              f"{rankmap['target_size_mib']:g} MiB" if rankmap.get("target_size_mib") is not None else
              f"k = {rankmap['k']:.5g}" if rankmap.get("k") is not None else "a rank map")
    before, after = int(manifest.get("params_before", 0)), int(manifest.get("params_after", 0))
    rows = [("strategy", str(rankmap.get("strategy", "?"))), ("target", target),
            ("threshold k", "-" if rankmap.get("k") is None else f"{rankmap['k']:.5g}"),
            ("achieved ERR", "-" if rankmap.get("achieved_err") is None else f"{rankmap['achieved_err']:.2f} %"),
            ("parameters", f"{before / 1e6:.2f}M → {after / 1e6:.2f}M ({100 * after / before:.1f} %)" if before else "-"),
            ("LRCs (rank < half)", f"{sum(bool(l.get('lrc')) for l in layers)} of {len(layers)} layers"),
            ("mode", f"{manifest.get('mode')}: {len(manifest.get('factored', {}))} layers factored, "
                     f"{len(manifest.get('truncated', {}))} truncated"),
            ("factors", ("ActSVD (activation-whitened)" if manifest.get("act_svd") else "weight SVD")
             + (", closed-form update" if manifest.get("updated") else ""))]
    calib = manifest.get("calibration") or {}
    if calib.get("data"):
        rows.append(("calibration", f"{calib['data']} ({calib.get('samples', '?')} windows × {calib.get('seqlen', '?')} "
                                    "tokens)"))
    return manifest, rankmap, rows


def model_card(folder: Path, merged_into: Path | None = None, measured: list[str] | None = None,
               shown: Path | None = None) -> str:
    """The README.md of a compressed folder (or of its merged export, `merged_into`): front matter, the plan, how
    to load it, and `measured` (table rows: `evaluation.card_measurements`). `shown`: the folder's path as the
    snippets name it (default: where it is)."""
    manifest, rankmap, rows = _plan_rows(folder)
    base = str(manifest.get("base_model") or rankmap.get("model") or "")
    strategy = str(rankmap.get("strategy", "welore"))
    tags = ["welore", "low-rank", "compressed", f"strategy-{strategy}"] + (["merged"] if merged_into else [])
    front = ["---", f"base_model: {HUB_IDS.get(base, base)}", "library_name: transformers",
             "tags:"] + [f"- {t}" for t in tags] + ["---", "", CARD_MARK, ""]
    name = (merged_into or shown or folder).name
    body = [f"# {name}", "",
            f"{base or 'A model'} compressed with [WeLore](https://arxiv.org/abs/2407.11239) (WeLore Studio): one "
            "global threshold on the min-max-normalised singular values of every block matrix; layers whose rank "
            "drops below half are stored as two low-rank factors (A·B).", "",
            "| plan | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]
    path = merged_into or shown or folder
    if merged_into is None and not (folder / "modeling_welore.py").is_file():  # an architecture transformers lacks
        body += ["## Load", "", f"With WeLore Studio: `welore_core.load_model(welore_core.resolve_model(\"{path}\"))` "
                 "(its architecture is not one transformers has, so no loader for plain transformers is bundled).", ""]
    elif merged_into is None:
        body += ["## Load", "", "Plain transformers (the folder bundles `modeling_welore.py`, which builds the "
                 "low-rank layers at their final shapes):", "", "```python",
                 "from transformers import AutoModelForCausalLM, AutoTokenizer",
                 f'model = AutoModelForCausalLM.from_pretrained("{path}", trust_remote_code=True)',
                 f'tokenizer = AutoTokenizer.from_pretrained("{path}")', "```", "",
                 f"With WeLore Studio: `welore_core.load_model(welore_core.resolve_model(\"{path}\"))`; "
                 f"`welore export {path} --merged -o OUT` writes a plain checkpoint of the original architecture.", ""]
    else:
        body += ["## Load", "", "A plain checkpoint of the original architecture: the factors are multiplied back, so "
                 "it is as large as the dense model (it saves nothing on disk) but computes what the compressed "
                 "model computes, in tools that have no low-rank layer.", "", "```python",
                 "from transformers import AutoModelForCausalLM, AutoTokenizer",
                 f'model = AutoModelForCausalLM.from_pretrained("{path}")',
                 f'tokenizer = AutoTokenizer.from_pretrained("{path}")', "```", ""]
    measured = measured or []
    body += ["## Measured", ""] + (["| measure | setting | value |", "|---|---|---:|", *measured] if measured else
                                   [f"Not measured yet: `welore eval {path}` (perplexity) or `welore eval {path} "
                                    "--tasks boolq,commonsense_qa` (zero-shot accuracy); each measurement of these "
                                    "weights is listed here when it is made."]) + [""]
    return "\n".join(front + body)


def write_card(folder: Path, measured: list[str] | None = None, shown: Path | None = None) -> Path | None:
    """(Re)write `folder/README.md`, unless a user wrote their own there (no WeLore mark): then None."""
    path = folder / CARD
    if path.is_file() and CARD_MARK not in path.read_text(errors="replace"):
        return None
    atomic_write_text(path, model_card(folder, measured=measured, shown=shown))
    return path
