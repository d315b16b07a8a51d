"""The closed-form update after truncation (issue 25): each factored layer's A re-solved by least squares on
the inputs the compressed model feeds it, layer after layer."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import one_line, run, tiny_gpt2, tiny_llama, tiny_neox

import welore_core as wc
from welore_core.compression.apply import CompressionConfig, compress_to, factor_layer
from welore_core.compression.apply.update import (BlockInputs, Moments, dense_weights, output_error, solve_left,
                                                  update_block)
from welore_core.models import MANIFEST, LowRankLinear, dense_weight, find_blocks


def _batches(vocab: int, n: int = 6, seqlen: int = 24, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (1, seqlen), generator=g) for _ in range(n)]


def _inputs(model: torch.nn.Module, batches: list[torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """Every input (tokens, in) each named layer receives over the windows."""
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    hooks = [model.get_submodule(n).register_forward_pre_hook(
        lambda m, args, n=n: seen[n].append(args[0].detach().reshape(-1, args[0].shape[-1]))) for n in names]
    with torch.no_grad():
        for batch in batches:
            model(input_ids=batch, use_cache=False)
    for h in hooks:
        h.remove()
    return {n: torch.cat(xs) for n, xs in seen.items()}


def test_the_solve_is_the_least_squares_solution() -> None:
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(12, 20, generator=g), torch.randn(5, 20, generator=g)
    x = torch.randn(300, 20, generator=g)  # tokens x in: the compressed model's inputs
    xd = x + 0.3 * torch.randn(300, 20, generator=g)  # the dense model's inputs of the same tokens
    m = Moments.of(x, xd)
    a = solve_left(w, b, m)
    direct = torch.linalg.lstsq((x @ b.T).double(), (xd @ w.T).double()).solution.T  # min ‖W X̂ − A B X‖
    torch.testing.assert_close(a, direct, atol=1e-6, rtol=1e-6)
    err = ((xd @ w.T - x @ b.T @ a.T.float()).norm() / (xd @ w.T).norm()) ** 2
    assert output_error(w, a, b, m) == pytest.approx(float(err), rel=1e-4)
    start = torch.randn(12, 5, generator=g)
    assert output_error(w, a, b, m) < output_error(w, start, b, m)
    for _ in range(5):  # nothing with this B does better on these inputs
        nearby = a + 1e-2 * torch.randn(12, 5, generator=g, dtype=torch.float64)
        assert output_error(w, nearby, b, m) > output_error(w, a, b, m)
    same = Moments.of(x)  # one set of inputs: the plain least squares of ‖W X − A B X‖
    torch.testing.assert_close(solve_left(w, b, same),
                               torch.linalg.lstsq((x @ b.T).double(), (x @ w.T).double()).solution.T,
                               atol=1e-6, rtol=1e-6)


def test_at_full_rank_the_update_changes_nothing() -> None:
    model = tiny_llama(layers=2)
    layers = wc.discover_layers(model)
    prefix, blocks = find_blocks(model)
    dense_blocks = [copy.deepcopy(b) for b in blocks]
    dense = dense_weights(model, [l.name for l in layers])
    for layer in layers:  # every layer factored at its full rank: A·B is W
        factor_layer(model, layer.name, layer.full_rank)
    plain = copy.deepcopy(model)
    batches = _batches(model.config.vocab_size)
    inputs = BlockInputs(model, blocks[0], batches)
    updates = {}
    for i, block in enumerate(blocks):
        updates.update(update_block(inputs, block, dense_blocks[i], f"{prefix}.{i}",
                                    {l.name: dense[l.name] for l in layers if l.block == i}))
    assert set(updates) == {l.name for l in layers}
    for name, u in updates.items():
        assert u.before < 1e-7 and u.after < 1e-6, name  # exact before and after, up to float32 and the ridge guard
    with torch.no_grad():  # A may move only where no calibration input points (o_proj's inputs are rank-deficient)
        for batch in batches:
            torch.testing.assert_close(model(batch).logits, plain(batch).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2, tiny_neox], ids=["llama", "gpt2", "neox"])
def test_each_A_solves_least_squares_against_the_dense_model_on_the_compressed_inputs(build) -> None:  # type: ignore[no-untyped-def]
    model = build()
    batches = _batches(model.config.vocab_size)
    spectra = wc.compute_spectra(model)
    plan = wc.make_plan(spectra, wc.PlanConfig(err=60))
    dense = {l.name: dense_weight(model.get_submodule(l.name), l.name).detach().clone() for l in spectra.layers}
    plain, updated = copy.deepcopy(model), copy.deepcopy(model)
    compress_to(plain, plan, CompressionConfig(mode="all"))
    report = compress_to(updated, plan, CompressionConfig(mode="all", update=True), batches=batches)
    assert report.factored and set(report.updated) == set(report.factored)
    # the final model feeds each layer what it was fed when its A was solved (only earlier layers matter); the
    # dense model gives the target
    names = list(report.factored)
    xs, xds = _inputs(updated, batches, names), _inputs(model, batches, names)
    for name in names:
        layer = updated.get_submodule(name)
        assert isinstance(layer, LowRankLinear)
        m = Moments.of(xs[name], xds[name])
        # as good as a fresh solve on these inputs (A itself may differ where no input points: G can be singular)
        best = output_error(dense[name], solve_left(dense[name], layer.B.weight, m), layer.B.weight, m)
        got = output_error(dense[name], layer.A.weight, layer.B.weight, m)
        assert got == pytest.approx(best, rel=1e-3, abs=1e-7), name
        u = report.updated[name]
        assert u.after <= u.before + 1e-12 and u.after == pytest.approx(got, rel=1e-3, abs=1e-7)
        assert u.before == pytest.approx(output_error(dense[name], plain.get_submodule(name).A.weight, layer.B.weight,
                                                      m), rel=1e-3, abs=1e-7)
        torch.testing.assert_close(layer.B.weight, plain.get_submodule(name).B.weight)  # B is kept
    assert sum(u.after for u in report.updated.values()) < sum(u.before for u in report.updated.values())
    with torch.no_grad():  # closer to the dense model on the calibration windows than without the update
        gap = [sum(float((m(b).logits - model(b).logits).square().sum()) for b in batches) for m in (plain, updated)]
    assert gap[1] < gap[0]


def test_the_update_is_part_of_the_compression_identity_and_needs_windows() -> None:
    calib = wc.Calibration.__new__(wc.Calibration)
    object.__setattr__(calib, "samples", 4)
    object.__setattr__(calib, "seqlen", 16)
    object.__setattr__(calib, "seed", 0)
    plain, updated = CompressionConfig().identity(calib, "d"), CompressionConfig(update=True).identity(calib, "d")
    assert "update" not in plain and "calib" not in plain
    assert updated["update"] == "dense-outputs" and updated["calib"] == "d" and updated["calib_samples"] == 4
    with pytest.raises(wc.WeLoreError, match="the update needs calibration windows"):
        compress_to(tiny_llama(), {"model.layers.0.mlp.up_proj": 2}, CompressionConfig(update=True))


def test_compress_update_from_the_command_line(capsys: pytest.CaptureFixture[str], lm_dir: Path, tmp_path: Path,
                                               corpus_file: Path) -> None:
    out = tmp_path / "updated"
    code, _, err = run(capsys, "compress", str(lm_dir), "--err", "60", "--update", "-o", str(out))
    assert code == 2 and one_line(err) == "--update needs --calib PATH (a text file for activation statistics)"
    assert not out.exists()
    code, printed, err = run(capsys, "compress", str(lm_dir), "--err", "60", "--all-layers", "--act-svd", "--update",
                             "--calib", str(corpus_file), "--calib-samples", "4", "--calib-seqlen", "16", "-o", str(out))
    assert code == 0, err
    assert "mean relative output error" in printed
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["updated"]) == set(manifest["factored"]) and manifest["act_svd"]
    assert all(after <= before + 1e-12 for before, after in manifest["updated"].values())
    model = wc.load_model(wc.resolve_model(out))
    assert isinstance(model.get_submodule(next(iter(manifest["updated"]))), LowRankLinear)
