"""Analysis of a gradient-dynamics run: pure functions from its records to numpy arrays and DataFrames.

- `gradient_cosine`: pairwise cosine similarity of one layer's probe gradients across checkpoints
  (the paper's Figure 2 row 1 and Figure 9), from the stored float16 unit gradients when the layer has
  them and from the count sketches otherwise (see `record` for the error of each);
- `spectra_over_time`: one layer's gradient (Figure 2 row 2) or weight (Figure 3) singular values,
  one row per checkpoint;
- `emergence_over_time` / `emergence_summary`: per layer, how low-rank the weight and gradient are at
  each checkpoint (rank kept at a fixed normalised threshold k as in WeLore's eq. 1, stable rank,
  effective rank) and how saturated the gradient is (cosine of consecutive gradients late in training);
- `claim_check`: the paper's claim in numbers — do layers whose gradients keep changing end lower-rank?
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..compression.plan import NORMALIZATIONS, kept_rank, normalize
from ..compression.spectra import effective_rank, stable_rank
from ..errors import WeLoreError
from ..models import LayerInfo
from .folder import RunFolder

GRAD_SOURCES = ("auto", "full", "sketch")


@dataclass
class DynamicsRun:
    """A stored run: its run.json, layers and recorded checkpoints (records are read on demand)."""

    folder: Path
    meta: dict[str, Any]
    layers: list[LayerInfo]
    steps: np.ndarray  # (T,) recorded steps, ascending
    paths: list[Path]  # the record of each step

    def layer(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise WeLoreError(f"run {self.folder}: no layer {name!r} (e.g. {self.layers[0].name})")

    def series(self, field: str, names: list[str] | None = None) -> dict[str, list[np.ndarray | None]]:
        """`field` ("grad_sv", "weight_sv", "grad_norm", "sketch", "grad") of each layer at each checkpoint
        (None where a record lacks it); every record file is opened once."""
        names = names if names is not None else [l.name for l in self.layers]
        out: dict[str, list[np.ndarray | None]] = {n: [] for n in names}
        for path in self.paths:
            try:
                with np.load(path) as record:
                    for name in names:
                        key = f"{field}/{name}"
                        out[name].append(record[key] if key in record.files else None)
            except (OSError, ValueError) as err:
                raise WeLoreError(f"{path}: unreadable record ({err})") from None
        return out

    def scalars(self, key: str) -> np.ndarray:
        """A per-checkpoint scalar ("probe_loss", "train_loss") as a (T,) array."""
        values = []
        for path in self.paths:
            with np.load(path) as record:
                values.append(float(record[key]) if key in record.files else math.nan)
        return np.asarray(values)

    def losses(self) -> pd.DataFrame:
        """Training loss and learning rate of every step so far (columns step, loss, lr)."""
        path = RunFolder(self.folder).losses
        return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["step", "loss", "lr"])


def load_run(folder: str | Path) -> DynamicsRun:
    """Open a run folder written by `run_dynamics` (finished or not)."""
    run = RunFolder.of(folder)
    if not run.is_run():
        raise WeLoreError(f"run {run.path}: no {run.run_file.name} here (not a `welore dynamics` output folder)")
    meta = run.meta()
    try:
        layers = [LayerInfo(l["name"], int(l["block"]), l["kind"], (int(l["shape"][0]), int(l["shape"][1])),
                            bool(l.get("bias", False)))
                  for l in meta.get("layers", [])]
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise WeLoreError(f"{run.run_file}: malformed layer list ({type(err).__name__}: {err})") from None
    steps = run.record_steps()
    if not layers or not steps:
        raise WeLoreError(f"run {run.path}: no recorded checkpoints yet")
    return DynamicsRun(run.path, meta, layers, np.asarray(steps), [run.record_path(s) for s in steps])


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of a (T, n) array, (T, T) in float64; NaN for a zero row."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1)
    unit = v / np.where(norms > 0, norms, np.nan)[:, None]  # (T, n)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def gradient_vectors(run: DynamicsRun, name: str, source: str = "auto") -> tuple[np.ndarray, str]:
    """One layer's probe gradients, (T, n): stored unit gradients ("full") or count sketches ("sketch").

    "auto" takes the full gradients when every checkpoint has them (the layer had at most `full_max`
    entries), else the sketches. Returns the array and the source used.
    """
    run.layer(name)
    return _vectors(run, [name], source)[name]


def _vectors(run: DynamicsRun, names: list[str], source: str) -> dict[str, tuple[np.ndarray, str]]:
    if source not in GRAD_SOURCES:
        raise WeLoreError(f"gradient source must be one of {GRAD_SOURCES}, got {source!r}")
    full = run.series("grad", names) if source in ("auto", "full") else {}
    sketches = run.series("sketch", names) if source in ("auto", "sketch") else {}
    out: dict[str, tuple[np.ndarray, str]] = {}
    for name in names:
        if name in full and all(g is not None for g in full[name]):
            out[name] = np.stack([np.asarray(g, dtype=np.float32) for g in full[name]]), "full"  # type: ignore[arg-type]
        elif source == "full":
            limit = run.meta.get("config", {}).get("full_max")
            raise WeLoreError(f"layer {name}: full gradients were not stored (more than full_max={limit} entries); "
                              "use the sketch")
        else:
            stacked = np.stack([np.asarray(v, dtype=np.float32) for v in sketches[name]])  # type: ignore[arg-type]
            out[name] = stacked, "sketch"
    return out


def gradient_cosine(run: DynamicsRun, name: str, source: str = "auto") -> tuple[np.ndarray, str]:
    """(T, T) cosine similarity of one layer's gradients across checkpoints, and the source used."""
    vectors, used = gradient_vectors(run, name, source)
    return cosine_matrix(vectors), used


def gradient_cosines(run: DynamicsRun, source: str = "auto") -> dict[str, tuple[np.ndarray, str]]:
    """`gradient_cosine` of every layer, reading each record once."""
    vectors = _vectors(run, [l.name for l in run.layers], source)
    return {name: (cosine_matrix(v), used) for name, (v, used) in vectors.items()}


def spectra_over_time(run: DynamicsRun, name: str, which: str = "grad") -> np.ndarray:
    """(T, r) descending singular values of one layer's gradient ("grad") or weight ("weight") per checkpoint."""
    if which not in ("grad", "weight"):
        raise WeLoreError(f"spectra must be of 'grad' or 'weight', got {which!r}")
    run.layer(name)
    values = run.series(f"{which}_sv", [name])[name]
    return np.stack([np.asarray(v, dtype=np.float64) for v in values])  # type: ignore[arg-type]


@dataclass(frozen=True)
class EmergenceConfig:
    """How low-rank emergence is scored."""

    k: float = 0.1  # threshold on normalised singular values: rank kept = #(normalised s >= k) (WeLore eq. 1)
    normalization: str = "minmax"  # as the rank planner: minmax (the paper's code) or max
    tail: float = 0.5  # "late training" = the last this fraction of checkpoints (at least the last two)
    source: str = "auto"  # gradients for cosines: auto (full when stored, else sketch), full or sketch

    def __post_init__(self) -> None:
        if not 0.0 < self.k < 1.0:
            raise WeLoreError(f"emergence k must be in (0, 1), got {self.k}")
        if self.normalization not in NORMALIZATIONS:
            raise WeLoreError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if not 0.0 < self.tail <= 1.0:
            raise WeLoreError(f"tail must be in (0, 1], got {self.tail}")
        if self.source not in GRAD_SOURCES:
            raise WeLoreError(f"gradient source must be one of {GRAD_SOURCES}, got {self.source!r}")


def _rank_k(s: np.ndarray, config: EmergenceConfig) -> int:
    return kept_rank(np.sort(normalize(s, config.normalization)), config.k)


def _identity(layer: LayerInfo) -> dict[str, Any]:
    return {"name": layer.name, "block": layer.block, "kind": layer.kind, "shape": f"{layer.shape[0]}x{layer.shape[1]}"}


def emergence_over_time(run: DynamicsRun, config: EmergenceConfig | None = None,
                        cosines: dict[str, tuple[np.ndarray, str]] | None = None) -> pd.DataFrame:
    """One row per (layer, checkpoint): weight and gradient rank at k, stable and effective rank (also as a
    fraction of full rank), gradient norm, and the cosine with the layer's gradient at the previous checkpoint."""
    config = config or EmergenceConfig()
    cosines = cosines if cosines is not None else gradient_cosines(run, config.source)
    weights, grads, norms = run.series("weight_sv"), run.series("grad_sv"), run.series("grad_norm")
    rows = []
    for layer in run.layers:
        cos = cosines[layer.name][0]
        full = layer.full_rank
        for t, step in enumerate(run.steps):
            w = np.asarray(weights[layer.name][t], dtype=np.float64)
            g = np.asarray(grads[layer.name][t], dtype=np.float64)
            rows.append({**_identity(layer), "step": int(step), "full_rank": full,
                         "w_rank_k": _rank_k(w, config), "w_rank_k_frac": _rank_k(w, config) / full,
                         "w_stable_rank": stable_rank(w), "w_erank_frac": effective_rank(w) / full,
                         "g_rank_k_frac": _rank_k(g, config) / full, "g_stable_rank": stable_rank(g),
                         "g_erank_frac": effective_rank(g) / full,
                         "g_norm": float(norms[layer.name][t]),  # type: ignore[arg-type]
                         "g_cos_prev": float(cos[t, t - 1]) if t > 0 else math.nan})
    return pd.DataFrame(rows)


def emergence_summary(run: DynamicsRun, config: EmergenceConfig | None = None,
                      cosines: dict[str, tuple[np.ndarray, str]] | None = None) -> pd.DataFrame:
    """One row per layer (name, block, kind, shape first): low-rank emergence of the weight from the first
    to the last checkpoint, and the gradient's rank and saturation late in training.

    g_saturation is the mean cosine of consecutive probe gradients over the tail: near 1 means the
    gradient stopped changing (the paper's "early-bird saturation"), low means it keeps changing.
    g_mean_cos is the mean over all pairs of checkpoints after step 0 (how bright Figure 2's matrix is).
    """
    config = config or EmergenceConfig()
    cosines = cosines if cosines is not None else gradient_cosines(run, config.source)
    frame = emergence_over_time(run, config, cosines)
    t = len(run.steps)
    tail_steps = set(run.steps[t - max(2, math.ceil(config.tail * t)):].tolist()) if t > 1 else set(run.steps.tolist())
    rows = []
    for layer in run.layers:
        part = frame[frame["name"] == layer.name].sort_values("step")
        first, last = part.iloc[0], part.iloc[-1]
        tail = part[part["step"].isin(tail_steps)]
        cos, used = cosines[layer.name]
        later = cos[1:, 1:] if t > 2 else cos
        off = later[~np.eye(later.shape[0], dtype=bool)]
        rows.append({**_identity(layer), "full_rank": layer.full_rank, "grad_source": used,
                     "w_rank_k_frac_start": first["w_rank_k_frac"], "w_rank_k_frac_end": last["w_rank_k_frac"],
                     "w_erank_frac_start": first["w_erank_frac"], "w_erank_frac_end": last["w_erank_frac"],
                     "w_stable_rank_start": first["w_stable_rank"], "w_stable_rank_end": last["w_stable_rank"],
                     "w_erank_drop": 1.0 - last["w_erank_frac"] / first["w_erank_frac"]
                     if first["w_erank_frac"] else math.nan,
                     "g_erank_frac": float(tail["g_erank_frac"].mean()),
                     "g_stable_rank": float(tail["g_stable_rank"].mean()),
                     "g_saturation": float(tail["g_cos_prev"].dropna().mean())
                     if tail["g_cos_prev"].notna().any() else math.nan,
                     "g_mean_cos": float(np.nanmean(off)) if off.size else math.nan})
    return pd.DataFrame(rows)


def _family(kind: str) -> str:
    low = kind.lower()
    if "attn" in low or "attention" in low:
        return "attention"
    if "mlp" in low or "ffn" in low or "feed_forward" in low:
        return "mlp"
    return "other"


def _spearman(a: pd.Series, b: pd.Series) -> float:
    ok = a.notna() & b.notna()
    if ok.sum() < 3:
        return math.nan
    ra, rb = a[ok].rank().to_numpy(), b[ok].rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def claim_check(summary: pd.DataFrame, metric: str = "w_rank_k_frac_end") -> dict[str, float]:
    """The paper's claim as numbers: attention in the first and last blocks ends lower-rank than the middle
    blocks' MLPs, and layers with saturated gradients stay high-rank (positive rank correlation between
    g_saturation and the final weight rank `metric`)."""
    blocks = sorted(b for b in summary["block"].unique() if b >= 0)
    family = summary["kind"].map(_family)
    terminal = summary["block"].isin([blocks[0], blocks[-1]]) if blocks else summary["block"] < -1
    middle = summary["block"].isin(blocks[1:-1]) if len(blocks) > 2 else terminal
    attn_t = summary[(family == "attention") & terminal]
    mlp_m = summary[(family == "mlp") & middle]
    return {"terminal_attention_rank": float(attn_t[metric].mean()), "middle_mlp_rank": float(mlp_m[metric].mean()),
            "terminal_attention_saturation": float(attn_t["g_saturation"].mean()),
            "middle_mlp_saturation": float(mlp_m["g_saturation"].mean()),
            "spearman_saturation_vs_rank": _spearman(summary["g_saturation"], summary[metric])}
