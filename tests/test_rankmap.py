"""Rank map JSON: schema-valid export, lossless round trip, and import errors that list every problem."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import torch

from welore_core import (PlanConfig, RankMapError, SpectraConfig, WeLoreError, compute_spectra, make_plan,
                         plan_from_rankmap, rankmap_dict, read_rankmap, save_rankmap)
from welore_core.compression.plan import check_rankmap, rankmap_schema


@pytest.fixture
def spectra(llama: torch.nn.Module):  # type: ignore[no-untyped-def]
    return compute_spectra(llama, SpectraConfig(use_cache=False))


def test_export_matches_schema_and_names_modules(spectra, llama, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = make_plan(spectra, PlanConfig(err=30))
    path = tmp_path / "rm.json"
    save_rankmap(plan, path)
    data = json.loads(path.read_text())
    jsonschema.validate(data, rankmap_schema())
    assert data["schema"] == "welore.rankmap/v1" and data["target_err"] == 30.0
    assert data["achieved_err"] == pytest.approx(plan.achieved_err)
    modules = dict(llama.named_modules())
    for entry in data["layers"]:
        assert entry["name"] in modules and entry["shape"] == list(modules[entry["name"]].weight.shape)
    assert data["totals"]["lrc"] == sum(e["lrc"] for e in data["layers"])


def test_round_trip_rebuilds_the_same_plan(spectra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for config in (PlanConfig(err=40), PlanConfig(strategy="energy", err=20), PlanConfig(err=None, k=0.3, min_ratio=0.3)):
        plan = make_plan(spectra, config)
        save_rankmap(plan, tmp_path / "rm.json")
        again = plan_from_rankmap(read_rankmap(tmp_path / "rm.json"), spectra)
        assert again.ranks() == plan.ranks() and again.totals == plan.totals
        assert again.k == plan.k and again.config.min_ratio == config.min_ratio


def test_import_lists_unknown_layers_shape_mismatches_and_bad_ranks(spectra) -> None:  # type: ignore[no-untyped-def]
    data = rankmap_dict(make_plan(spectra, PlanConfig(err=30)))
    bad = copy.deepcopy(data)
    bad["layers"][0]["name"] = "model.layers.99.self_attn.q_proj"
    bad["layers"][1]["shape"] = [17, 32]
    bad["layers"][2]["rank"] = 10_000
    problems = check_rankmap(bad, spectra.layers)
    assert problems == ["unknown layer model.layers.99.self_attn.q_proj",
                        "layer model.layers.0.self_attn.k_proj: shape [17, 32] but the model has [16, 32]",
                        "layer model.layers.0.self_attn.v_proj: rank 10000 out of range [1, 16]"]
    with pytest.raises(RankMapError) as info:
        plan_from_rankmap(bad, spectra)
    assert "does not fit" in str(info.value) and len(info.value.problems) == 3


def test_import_rejects_wrong_version_bad_json_and_schema_violations(tmp_path: Path, spectra) -> None:  # type: ignore[no-untyped-def]
    data = rankmap_dict(make_plan(spectra, PlanConfig(err=30)))
    with pytest.raises(RankMapError, match="welore.rankmap/v0.*not supported"):
        read_rankmap({**data, "schema": "welore.rankmap/v0"})
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": ')
    with pytest.raises(RankMapError, match=f"rank map {broken}: not valid JSON"):
        read_rankmap(broken)
    with pytest.raises(WeLoreError, match="cannot read"):
        read_rankmap(tmp_path / "missing.json")
    missing_field = {k: v for k, v in data.items() if k != "min_ratio"}
    with pytest.raises(RankMapError, match="'min_ratio' is a required property"):
        read_rankmap(missing_field)
    wrong_type = copy.deepcopy(data)
    wrong_type["layers"][4]["rank"] = "twelve"
    with pytest.raises(RankMapError, match="layers/4/rank: 'twelve' is not of type 'integer'"):
        read_rankmap(wrong_type)
    with pytest.raises(RankMapError, match="expected a JSON object"):
        read_rankmap("[1, 2]")


def test_import_reports_fields_that_contradict_the_model_or_the_rank(spectra) -> None:  # type: ignore[no-untyped-def]
    data = rankmap_dict(make_plan(spectra, PlanConfig(err=60)))
    bad = copy.deepcopy(data)
    bad["layers"][0]["full_rank"] = 999
    bad["layers"][1]["type"] = "mlp.up_proj"
    bad["layers"][2]["block"] = 7
    bad["layers"][3]["reduction"] = 0.0
    bad["layers"][4]["lrc"] = not bad["layers"][4]["lrc"]
    problems = check_rankmap(bad, spectra.layers)
    assert len(problems) == 5
    assert "full_rank 999 but the model has 32" in problems[0] and "type 'mlp.up_proj'" in problems[1]
    assert "block 7" in problems[2] and "reduction 0 does not match" in problems[3] and "min_ratio" in problems[4]


def test_unlisted_layers_are_reported_as_staying_dense(spectra) -> None:  # type: ignore[no-untyped-def]
    from welore_core import missing_layers

    data = rankmap_dict(make_plan(spectra, PlanConfig(err=30)))
    data["layers"] = data["layers"][:2]
    assert check_rankmap(data, spectra.layers) == []
    assert missing_layers(data, spectra.layers) == [l.name for l in spectra.layers[2:]]


def test_undecodable_file_and_out_of_range_k(tmp_path: Path, spectra) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(RankMapError, match="not UTF-8"):
        read_rankmap(path)
    data = {**rankmap_dict(make_plan(spectra, PlanConfig(err=30))), "k": 5.0, "target_err": None}
    with pytest.raises(RankMapError, match="k: 5.0 is greater than the maximum of 1"):
        read_rankmap(data)
