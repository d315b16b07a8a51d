"""Rank map JSON: a rank plan serialised (schema `welore.rankmap/v1`, schemas/rankmap.v1.schema.json).

Import validates twice: against the JSON Schema (structure, types, version), then against a model
(unknown layers, shape mismatches, ranks out of range), and reports every problem at once.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...errors import RankMapError, WeLoreError
from ...models import LayerInfo
from ...utils import atomic_write_text, read_capped, regular_file
from ..spectra.compute import Spectra
from .allocate import GREEDY, PlanConfig, RankPlan, plan_from_ranks

SCHEMA_ID = "welore.rankmap/v1"
SCHEMA_PATH = Path(__file__).parent / "schemas" / "rankmap.v1.schema.json"
MAX_BYTES = 8 * 2**20  # a 70B model's rank map is ~150 KB: anything this large is not one (the dashboard's upload cap)
MAX_LAYERS = 50_000  # ~100x the linear layers of a 70B model


@lru_cache(maxsize=1)
def rankmap_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def rankmap_dict(plan: RankPlan) -> dict[str, Any]:
    """The plan as a schema-conforming dict."""
    c = plan.config
    return {
        "schema": SCHEMA_ID,
        "model": plan.model,
        "fingerprint": plan.fingerprint,
        "normalization": c.normalization,
        "strategy": c.strategy,
        "k": plan.k,
        "target_err": plan.target_err,
        "achieved_err": plan.achieved_err,
        "min_ratio": c.min_ratio,
        "search": c.search,
        "layers": [{"name": l.name, "block": l.block, "type": l.kind, "shape": list(l.shape), "full_rank": l.full_rank,
                    "rank": l.rank, "reduction": l.reduction, "lrc": l.lrc, "rel_error": l.rel_error}
                   for l in plan.layers],
        "totals": plan.totals.to_dict(),
        **({"target_params": c.params} if c.params is not None else {}),
        **({"target_size_mib": c.size_mib, "size_dtype": c.size_dtype} if c.size_mib is not None else {}),
    }


def custom_rankmap(ranks: dict[str, int], layers: list[LayerInfo], model: str, min_ratio: float,
                   fingerprint: str = "") -> dict[str, Any]:
    """A rank map of hand-chosen ranks (strategy "custom"); unlisted layers are not in it (they stay dense)."""
    listed = [l for l in layers if l.name in ranks]
    entries = []
    for l in listed:
        reduction = 1.0 - ranks[l.name] / l.full_rank
        entries.append({"name": l.name, "block": l.block, "type": l.kind, "shape": list(l.shape),
                        "full_rank": l.full_rank, "rank": int(ranks[l.name]), "reduction": reduction,
                        "lrc": reduction > min_ratio})
    full = sum(l.full_rank for l in listed)
    achieved = 100.0 * (1.0 - sum(e["rank"] for e in entries) / full) if full else 0.0
    lrc = sum(e["lrc"] for e in entries)
    return {"schema": SCHEMA_ID, "model": model, "fingerprint": fingerprint, "normalization": "minmax",
            "strategy": "custom", "k": None, "target_err": None, "achieved_err": achieved, "min_ratio": min_ratio,
            "search": "exact", "layers": entries,
            "totals": {"achieved_err": achieved, "layers": len(entries), "lrc": lrc, "nlrc": len(entries) - lrc}}


def save_rankmap(plan: RankPlan, path: Path) -> None:
    atomic_write_text(Path(path), json.dumps(rankmap_dict(plan), indent=1) + "\n")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows (a rank map holds finite numbers only)")


def read_rankmap(source: Path | str | bytes | dict[str, Any]) -> dict[str, Any]:
    """Load (from a path, JSON text or bytes, or a dict) and validate against the schema; raises RankMapError.

    A file or text larger than MAX_BYTES, more than MAX_LAYERS layers, nesting too deep to parse, and NaN or
    Infinity anywhere are refused before the schema is checked (each would make the check slow or crash it)."""
    where = "rank map"
    if isinstance(source, dict):
        data: Any = source
    else:
        text = source
        if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith(("{", "["))):
            where = f"rank map {source}"
            try:
                size = regular_file(Path(source), "rank map").st_size
                if size > MAX_BYTES:
                    raise RankMapError(f"{where}: {size:,} bytes is too large for a rank map (at most {MAX_BYTES:,}; "
                                       "a 70B model's is about 150 KB)")
                raw = read_capped(Path(source), MAX_BYTES, "rank map")
                text = raw.decode("utf-8")
            except RankMapError:
                raise
            except WeLoreError as err:  # missing, unreadable, not a regular file (/dev/zero), grew past the cap
                raise WeLoreError(f"rank map {source}: cannot read ({str(err).removeprefix(f'{source}: ')})") from None
            except UnicodeDecodeError as err:
                raise RankMapError(f"{where}: not UTF-8 text", [str(err)]) from None
        if len(text) > MAX_BYTES:
            raise RankMapError(f"{where}: {len(text):,} bytes is too large for a rank map (at most {MAX_BYTES:,}; "
                               "a 70B model's is about 150 KB)")
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except ValueError as err:  # JSONDecodeError, NaN/Infinity, and UnicodeDecodeError for undecodable bytes
            raise RankMapError(f"{where}: not valid JSON", [str(err)]) from None
        except RecursionError:
            raise RankMapError(f"{where}: nested too deeply to be a rank map") from None
    if not isinstance(data, dict):
        raise RankMapError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if data.get("schema") != SCHEMA_ID:
        raise RankMapError(f"{where}: schema {data.get('schema')!r} is not supported (this tool reads {SCHEMA_ID})")
    layers = data.get("layers")
    if isinstance(layers, list) and len(layers) > MAX_LAYERS:
        raise RankMapError(f"{where}: {len(layers):,} layers is more than a rank map can hold (at most {MAX_LAYERS:,})")
    import jsonschema

    validator = jsonschema.Draft202012Validator(rankmap_schema())
    try:
        errors = sorted(validator.iter_errors(data), key=lambda e: [(0, p, "") if isinstance(p, int) else (1, 0, str(p))
                                                                    for p in e.absolute_path])
    except RecursionError:
        raise RankMapError(f"{where}: nested too deeply to be a rank map") from None
    problems = [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}" for e in errors]
    if problems:
        raise RankMapError(f"{where}: does not match the {SCHEMA_ID} schema", problems)
    return data


def check_rankmap(data: dict[str, Any], layers: list[LayerInfo]) -> list[str]:
    """Problems applying a schema-valid rank map to a model with these layers (empty when it fits).

    The rank is authoritative; `full_rank`, `block`, `type` must describe the model's layer and
    `reduction` / `lrc` must follow from the rank and `min_ratio`, or the map was made for another model
    or edited inconsistently.
    """
    known = {l.name: l for l in layers}
    problems, seen = [], set()
    for entry in data["layers"]:
        name = entry["name"]
        if name in seen:
            problems.append(f"layer {name}: listed twice")
        seen.add(name)
        layer = known.get(name)
        if layer is None:
            problems.append(f"unknown layer {name}")
            continue
        if tuple(entry["shape"]) != layer.shape:
            problems.append(f"layer {name}: shape {entry['shape']} but the model has {list(layer.shape)}")
            continue
        for key, actual in (("full_rank", layer.full_rank), ("block", layer.block), ("type", layer.kind)):
            if entry[key] != actual:
                problems.append(f"layer {name}: {key} {entry[key]!r} but the model has {actual!r}")
        if not 1 <= entry["rank"] <= layer.full_rank:
            problems.append(f"layer {name}: rank {entry['rank']} out of range [1, {layer.full_rank}]")
            continue
        reduction = 1.0 - entry["rank"] / layer.full_rank
        if abs(entry["reduction"] - reduction) > 1e-6:
            problems.append(f"layer {name}: reduction {entry['reduction']:g} does not match rank {entry['rank']} "
                            f"of {layer.full_rank} ({reduction:g})")
        elif entry["lrc"] != (reduction > data["min_ratio"]):
            problems.append(f"layer {name}: lrc {entry['lrc']} but reduction {reduction:g} vs min_ratio {data['min_ratio']:g}")
    return problems


def fingerprint_note(data: dict[str, Any], fingerprint: str) -> str:
    """A one-line note when a rank map was made on other weights than `fingerprint` ("" when the same, or when
    the map records none): its ranks still apply as listed, but its plan was solved for another model."""
    made = data.get("fingerprint") or ""
    if not made or made == fingerprint:
        return ""
    return (f"the rank map was made on other weights ({data.get('model')!r}, fingerprint {made[:16]}; this model's "
            f"is {fingerprint[:16]}): its ranks apply as listed, but its k and ERR were solved for those weights")


def missing_layers(data: dict[str, Any], layers: list[LayerInfo]) -> list[str]:
    """Model layers the map does not list: they stay dense at full rank when it is applied."""
    listed = {e["name"] for e in data["layers"]}
    return [l.name for l in layers if l.name not in listed and l.block >= 0]


def plan_from_rankmap(data: dict[str, Any], spectra: Spectra) -> RankPlan:
    """Validate a rank map against the model's spectra and rebuild the full plan (errors, totals) from it."""
    data = read_rankmap(data)
    problems = check_rankmap(data, spectra.layers)
    if problems:
        raise RankMapError(f"rank map for {data['model']!r} does not fit model {spectra.model!r}", problems)
    strategy = data["strategy"] if data["strategy"] != "custom" else "welore"
    target: dict[str, Any] = {}  # the one target the map records: ERR, parameters, size, else k (0 for none)
    if data["target_err"] is not None:
        target = {"err": data["target_err"]}
    elif data.get("target_params") is not None:
        target = {"params": data["target_params"]}
    elif data.get("target_size_mib") is not None:
        target = {"size_mib": data["target_size_mib"], "size_dtype": data.get("size_dtype", "bfloat16")}
    elif strategy not in GREEDY:
        target = {"k": data["k"] or 0.0}
    try:
        config = PlanConfig(strategy=strategy, normalization=data["normalization"], min_ratio=data["min_ratio"],
                            **target)
    except WeLoreError as problem:
        raise RankMapError("rank map settings are inconsistent", [str(problem)]) from None
    ranks = {e["name"]: int(e["rank"]) for e in data["layers"]}
    return plan_from_ranks(spectra, ranks, config, k=data["k"])
