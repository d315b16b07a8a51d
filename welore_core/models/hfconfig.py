"""config.json of compressed folders: a standard Hugging Face config that plain transformers loads with
`trust_remote_code=True` through the bundled `modeling_welore.py` (`bundled/`), and that this package reads back
as the base architecture's config.

A compressed folder's config is its base model's, with
    model_type    "welore_<base model_type>"   (plain transformers refuses it without trust_remote_code),
    architectures ["WeLore<base architecture>"],
    auto_map      AutoConfig / AutoModelForCausalLM -> modeling_welore.WeLore<base class>,
    welore        {"format", "base_model_type", "base_architecture", "factored": {layer: rank}}.
Folders written before this format keep their base config and still load.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import WeLoreError
from ..utils import read_json, transformers_ready
from .bundled import MODELING

HF_FORMAT = "welore.hf/v1"
MODELING_FILE = MODELING.name  # modeling_welore.py


def modeling_digest() -> str:
    """sha256 of the modeling file this package writes into folders."""
    return hashlib.sha256(MODELING.read_bytes()).hexdigest()


def loadable_config(config: dict[str, Any], factored: dict[str, int]) -> dict[str, Any]:
    """`config` (a base model's config.json, or an earlier compressed folder's) as a compressed folder's config
    with these factored layers."""
    transformers_ready()
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    out = dict(config)
    old = out.pop("welore", None) or {}
    base_type = old.get("base_model_type") or str(out.get("model_type", ""))
    archs = out.get("architectures") or [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(base_type, "")]  # a config saved alone
    arch = old.get("base_architecture") or str(archs[0] or "")
    if base_type not in CONFIG_MAPPING or not arch:
        raise WeLoreError(f"model type {base_type!r} ({arch or 'no architecture'}) is not one transformers knows: the "
                          "folder could not be loaded with plain transformers")
    config_class = CONFIG_MAPPING[base_type].__name__
    out.update(model_type=f"welore_{base_type}", architectures=[f"WeLore{arch}"],
               auto_map={"AutoConfig": f"modeling_welore.WeLore{config_class}",
                         "AutoModelForCausalLM": f"modeling_welore.WeLore{arch}"},
               welore={"format": HF_FORMAT, "base_model_type": base_type, "base_architecture": arch,
                       "factored": dict(factored)})
    return out


def write_loadable(folder: Path, factored: dict[str, int]) -> str:
    """Turn `folder/config.json` into a compressed folder's config and write the modeling file beside it; its sha256
    (what the manifest records)."""
    path = folder / "config.json"
    config = loadable_config(read_json(path, "config"), factored)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    data = MODELING.read_bytes()
    (folder / MODELING_FILE).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def check_modeling(folder: Path, expected: str | None) -> None:
    """A compressed folder in the loadable format carries the modeling file it was written with."""
    path = folder / MODELING_FILE
    if not expected:
        return
    if not path.is_file():
        raise WeLoreError(f"{folder}: {MODELING_FILE} is missing; plain transformers cannot load this folder without "
                          f"it (copy it from {MODELING} or write the folder again)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise WeLoreError(f"{path}: altered since it was written (sha256 {digest[:12]}…, the manifest records "
                          f"{expected[:12]}…); trust_remote_code would run the altered code: restore it from {MODELING}")
