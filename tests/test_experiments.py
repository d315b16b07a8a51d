"""Runs in the registry, sweeps and sensitivity scans on a tiny model with its own tokenizer."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import welore_core as wc
from welore_core.compression.apply import CompressionConfig, compress_to, save_compressed
from welore_core.compression.spectra import Calibration
from welore_core.evaluation import (EvalConfig, Registry, evaluate_model, load_for_eval, perplexity_sweep, plan_hash,
                                    sensitivity_scan, token_ids)
from welore_core.evaluation import runs as experiments


def test_identical_evaluation_is_answered_from_the_registry(lm_dir: Path, corpus_file: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    config = EvalConfig(data=str(corpus_file), seqlen=64, tokens=2048)
    first = evaluate_model(lm_dir, config)
    assert first["cached"] is False and first["tokens"] == 2048

    def no_forward(*args: object, **kwargs: object) -> None:
        raise AssertionError("should come from the registry")

    monkeypatch.setattr(experiments, "perplexity", no_forward)
    again = evaluate_model(lm_dir, config)
    assert again["cached"] is True and again["ppl"] == first["ppl"]
    runs = Registry.default().frame("eval")
    assert len(runs) == 1 and runs.loc[0, "seqlen"] == 64 and runs.loc[0, "token_budget"] == 2048
    with pytest.raises(AssertionError):  # another budget is another run
        evaluate_model(lm_dir, EvalConfig(data=str(corpus_file), seqlen=64, tokens=1024))


def test_plan_hash_separates_ranks_modes_and_methods() -> None:
    ranks = {"a": 3, "b": 4}
    assert plan_hash(None) == "dense"
    assert len({plan_hash(ranks), plan_hash({"a": 3, "b": 5}), plan_hash(ranks, "all"), plan_hash(ranks, act_svd=True)}) == 4
    assert plan_hash(ranks) == plan_hash(dict(reversed(list(ranks.items()))))


def test_sweep_compresses_and_evaluates_each_point_once(lm_dir: Path, corpus_file: Path) -> None:
    config = EvalConfig(data=str(corpus_file), seqlen=64, tokens=1024)
    df = perplexity_sweep(lm_dir, [30.0, 60.0], ["welore", "uniform"], config)
    assert list(df["strategy"]) == ["dense", "welore", "welore", "uniform", "uniform"]
    assert not df["cached"].any()
    dense = df.iloc[0]
    assert dense["params"] == 27360 and dense["ppl"] == pytest.approx(evaluate_model(lm_dir, config)["ppl"])
    for strategy in ("welore", "uniform"):
        part = df[df.strategy == strategy]
        assert part["params"].iloc[1] <= part["params"].iloc[0] <= dense["params"]
        assert (part["achieved_err"] - part["target_err"]).abs().max() < 3.0
    assert perplexity_sweep(lm_dir, [30.0, 60.0], ["welore", "uniform"], config)["cached"].all()


def test_sensitivity_scan_restores_every_weight(lm_dir: Path, corpus_file: Path) -> None:
    loaded = load_for_eval(lm_dir)
    config = EvalConfig(data=str(corpus_file), seqlen=64, tokens=512)
    ids, _ = token_ids(loaded, config)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    sensitivity_scan(loaded.model, ids, config, ratio=0.75)
    sensitivity_scan(loaded.model, ids, config, ratio=0.75, by="layer")
    assert all(torch.equal(before[k], v) for k, v in loaded.model.state_dict().items())


def test_sensitivity_groups_by_type_or_layer_and_every_cut_changes_perplexity(lm_dir: Path, corpus_file: Path) -> None:
    loaded = load_for_eval(lm_dir)
    config = EvalConfig(data=str(corpus_file), seqlen=64, tokens=512)
    ids, _ = token_ids(loaded, config)
    by_type = sensitivity_scan(loaded.model, ids, config, ratio=0.75)
    assert list(by_type["kind"])[:3] == ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
    assert len(by_type) == 7 and (by_type["layers"] == 3).all()
    dense = wc.perplexity(loaded.model, ids, config).ppl
    assert (by_type["dense_ppl"] == dense).all() and (by_type["ppl"] != dense).all()
    by_layer = sensitivity_scan(loaded.model, ids, config, ratio=0.75, by="layer")
    assert len(by_layer) == 21 and set(by_layer["block"]) == {0, 1, 2} and (by_layer["layers"] == 1).all()


def test_sensitivity_settings_are_refused_before_any_work(lm_dir: Path, corpus_file: Path) -> None:
    config = EvalConfig(data=str(corpus_file), seqlen=64, tokens=512)
    with pytest.raises(wc.WeLoreError, match="ratio must be in"):
        wc.sensitivity_of("/no/such/model", config, ratio=1.0)
    with pytest.raises(wc.WeLoreError, match="'type' or 'layer'"):
        wc.sensitivity_of("/no/such/model", config, by="block")


def test_act_svd_runs_are_keyed_by_their_calibration(lm_dir: Path, corpus_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text()[::-1])
    config = EvalConfig(data=str(corpus_file), seqlen=64, tokens=512)
    act = CompressionConfig(act_svd=True)
    first = perplexity_sweep(lm_dir, [60.0], ["welore"], config, act, calib=Calibration(str(corpus_file), 4, 32))
    assert not first["cached"].iloc[1]
    assert perplexity_sweep(lm_dir, [60.0], ["welore"], config, act, calib=Calibration(str(corpus_file), 4, 32))["cached"].all()
    assert not perplexity_sweep(lm_dir, [60.0], ["welore"], config, act, calib=Calibration(str(other), 4, 32))["cached"].iloc[1]
    assert not perplexity_sweep(lm_dir, [60.0], ["welore"], config, CompressionConfig(act_svd=True, damp=1.0),
                     calib=Calibration(str(corpus_file), 4, 32))["cached"].iloc[1]


def test_sensitivity_on_a_compressed_model_changes_factored_layers(lm_dir: Path, corpus_file: Path,
                                                                   tmp_path: Path) -> None:
    loaded = load_for_eval(lm_dir)
    plan = wc.make_plan(wc.compute_spectra(loaded.model), wc.PlanConfig(err=60))
    report = compress_to(loaded.model, plan)
    folder = save_compressed(loaded.model, tmp_path / "c", report, lm_dir)
    compressed = load_for_eval(folder)
    config = EvalConfig(data=str(corpus_file), seqlen=64, tokens=512)
    ids, _ = token_ids(compressed, config)
    df = sensitivity_scan(compressed.model, ids, config, ratio=0.9, by="layer").set_index("group")
    factored = next(iter(report.factored))
    assert df.loc[factored, "ppl"] != df.loc[factored, "dense_ppl"]
    assert isinstance(compressed.model.get_submodule(factored), wc.LowRankLinear)
