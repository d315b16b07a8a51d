"""The rank-plan explorer: ERR and k sliders, the plan's totals and the LRC partition heatmap, moved in the browser.

The plans at every point of the ERR grid (0-99 % in steps of 0.5) and the k grid (0-1 in steps of 0.005) come
from the core in one pass (`welore_core.plan_grid`) and reach the browser once per strategy, as one JSON string.
A slider move then redraws the totals and the heatmap from that table, with no round trip; when the slider
rests, its value goes back to the server (one fragment rerun), so the tabs below and the parameters slider
follow; from then on the grid stays in the browser and a rerun sends only the current plan. The server's own
plan (a parameters budget, a value set elsewhere) is sent as `current` and shown as is. Every number the
browser shows is formatted here, by `metric_cells`, so the browser only places strings.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, MutableMapping

import streamlit as st

import welore_core as wc
from dashboard.settings import Keys

HERE = Path(__file__).parent
LABELS = ("Achieved ERR", "LRC / N-LRC", "Parameters", "Trainable (LRC)", "Memory bf16 / fp32", "Mean rel. error")
ERR_LABEL = "Target effective rank reduction (ERR, %)"
K_LABELS = {"welore": "Threshold k (normalised singular value)", "energy": "k: energy kept per layer",
            "uniform": "k: reduction ratio (follows ERR)", "greedy": "k: none (greedy has no threshold)"}
RANGES = {Keys.ERR: (0.0, 99.0), Keys.K: (0.0, 1.0)}  # what a pick may set: the sliders' ranges
_component = st.components.v2.component(
    "welore_explorer", js=(HERE / "explorer.js").read_text(), css=(HERE / "explorer.css").read_text(),
    isolate_styles=False)  # in the page's DOM: the app's fonts, and tests and benches find it without shadow roots


def metric_cells(totals: wc.PlanTotals, k: float | None) -> list[list[Any]]:
    """The six totals as [value, help, delta, delta is worse] each, in LABELS order (the browser's only source)."""
    t = totals
    change = 100 * (t.param_ratio - 1)
    saved = (t.bytes_compressed["bfloat16"] - t.bytes_dense["bfloat16"]) / 2**20
    return [
        [f"{t.achieved_err:.2f} %", f"k = {'-' if k is None else f'{k:.5f}'}", "", False],
        [f"{t.lrc} / {t.nlrc}", "layers factored (LRC) / kept dense (N-LRC)", "", False],
        [f"{t.params_compressed / 1e6:.1f} M",
         f"LRCs factored; dense: {t.params_dense / 1e6:.1f} M. Every layer the smaller way: "
         f"{t.params_all_layers / 1e6:.1f} M ({t.params_removed_pct:.1f} % of the analysed layers' removed)",
         f"{change:+.1f} %", change > 0],
        [f"{t.trainable_params / 1e6:.2f} M", "parameters of the LRC factors: what WeLore fine-tunes", "", False],
        [f"{t.bytes_compressed['bfloat16'] / 2**20:.0f} / {t.bytes_compressed['float32'] / 2**20:.0f} MiB",
         "weights of the analysed model in each dtype", f"{saved:+.0f} MiB (bf16)", saved > 0],
        [f"{t.mean_rel_error:.3f}", "mean over layers of ||W - W_r||_F / ||W||_F", "", False],
    ]


def _axis(sweep: wc.PlanGrid, label: str, step: float) -> dict[str, Any]:
    return {"label": label, "min": sweep.targets[0], "max": sweep.targets[-1], "step": step,
            "targets": list(sweep.targets), "ranks": sweep.ranks.tolist(), "lrc": sweep.lrc.astype(int).tolist(),
            "k": list(sweep.k),
            "err": [t.achieved_err for t in sweep.totals],
            "metrics": [metric_cells(t, k) for t, k in zip(sweep.totals, sweep.k)]}


def grid_payload(spectra: wc.Spectra, sweeps: dict[str, wc.PlanGrid], strategy: str) -> str:
    """Everything the browser needs to move the sliders on its own, as one JSON string: the layers' places in the
    heatmap and full ranks, and per grid point (`sweeps` by axis) the ranks, LRC flags, k, achieved ERR and
    formatted totals. The browser applies no rule of its own: which layer is an LRC comes from the core."""
    kinds = list(dict.fromkeys(l.kind for l in spectra.layers))
    blocks = sorted({l.block for l in spectra.layers})
    k = sweeps.get("k")
    return json.dumps({
        "names": [l.name for l in spectra.layers], "full": [l.full_rank for l in spectra.layers],
        "col": [kinds.index(l.kind) for l in spectra.layers], "row": [blocks.index(l.block) for l in spectra.layers],
        "kinds": kinds, "blocks": blocks, "labels": LABELS,
        "axes": {"err": _axis(sweeps["err"], ERR_LABEL, 0.5),
                 "k": None if k is None else _axis(k, K_LABELS[strategy], 0.005)},
        "k_label": K_LABELS[strategy]}, separators=(",", ":"))


def current(plan: wc.RankPlan, driver: str, seq: float = 0,
            measured: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The server's plan, as the browser draws a grid point, naming the last pick applied (`seq`): the browser
    draws it unless its slider has moved on. `measured` (`wc.measured_costs`) is what this model's plans of the
    strategy were measured to cost, perplexity and accuracy per task; the browser reads each curve off at the
    slider's ERR as the slider moves."""
    value = {"err": plan.target_err, "k": plan.k, "params": plan.totals.params_removed_pct}.get(driver)
    return {"axis": driver, "value": value, "ranks": [l.rank for l in plan.layers],
            "lrc": [int(l.lrc) for l in plan.layers], "k": plan.k,
            "err": plan.achieved_err, "metrics": metric_cells(plan.totals, plan.k), "seq": seq,
            "measured": measured or []}


def apply_pick(state: MutableMapping[str, Any], pick: Mapping[str, Any] | None, key: str = Keys.EXPLORER) -> None:
    """A pick from the browser: {axis, value} within its slider's range becomes the plan's driver and target;
    `seq` is echoed back with the plan, and `have` (the grid the browser holds) spares resending it. Kept in plain
    session keys, which outlive the component's own state when the user visits another page."""
    pick = pick or {}
    state[f"{key}_have"] = pick.get("have")
    if isinstance(pick.get("seq"), (int, float)):
        state[f"{key}_seq"] = pick["seq"]
    axis, value = pick.get("axis"), pick.get("value")
    if axis in RANGES and isinstance(value, (int, float)) and RANGES[axis][0] <= value <= RANGES[axis][1]:
        state[Keys.DRIVER] = axis  # "err" or "k": Keys.ERR, Keys.K
        state[axis] = float(value)


def explorer(grid_id: str, payload: str, plan: wc.RankPlan, driver: str, key: str = Keys.EXPLORER,
             measured: list[dict[str, Any]] | None = None) -> None:
    """Mount the explorer; a released slider reruns the fragment around it with its value (`apply_pick`). The grid
    goes with every mount until a pick says the browser holds it: a move then brings back the current plan alone,
    not half a megabyte of grid."""
    state = st.session_state
    grid = "" if state.get(f"{key}_have") == grid_id else payload
    shown = current(plan, driver, state.get(f"{key}_seq", 0), measured)
    _component(key=key, data={"id": grid_id, "grid": grid, "current": shown},
               on_pick_change=lambda: apply_pick(state, state[key].get("pick"), key))
