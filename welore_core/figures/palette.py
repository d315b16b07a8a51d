"""The one palette of every figure: a strategy, a fine-tuning mode or a layer family has the same colour on
every page, in every HTML report and in the docs."""
from __future__ import annotations

GREEN, RED, BLUE, ORANGE, PURPLE, GREY, DARK = "#2ca02c", "#d62728", "#1f77b4", "#ff7f0e", "#9467bd", "#7f7f7f", "#444444"

LRC = GREEN  # Low-Rank Components: factored and fine-tuned
NLRC = RED
STRATEGY = {"welore": GREEN, "uniform": RED, "energy": BLUE, "dense": DARK}
MODE = {"lrc": GREEN, "nlrc": RED, "full": DARK, "lora": BLUE, "galore": ORANGE}
FAMILY = {"self_attn": BLUE, "mlp": RED}  # layer families of the dynamics lab's figures
OTHER = PURPLE  # a strategy or mode without a colour of its own
THRESHOLD = "cyan"  # the kept rank at k, drawn over a spectra heatmap
REFERENCE = DARK  # reference lines: k on a spectrum, the dense model's perplexity
TRAIN_LOSS, PROBE_LOSS = "#9ecae1", "#08519c"  # per-step training loss (light) and the held-out probe (dark)
# continuous scales: reductions and emergence (Viridis), normalised spectra (Plasma), spectra over time (Inferno),
# cosines (RdBu_r, diverging at 0), perplexity increases (Reds)
REDUCTION_SCALE, SPECTRA_SCALE, TIME_SCALE, COSINE_SCALE, COST_SCALE = "Viridis", "Plasma", "Inferno", "RdBu_r", "Reds"


def strategy_colour(name: str) -> str:
    return STRATEGY.get(name, OTHER)


def family_colour(kind: str) -> str:
    """Attention blue, MLP red, anything else grey (by the layer type's prefix)."""
    return next((c for prefix, c in FAMILY.items() if kind.startswith(prefix)), GREY)
