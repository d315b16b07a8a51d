"""Weights dtype and device on every command (issue 13), tested on the CPU with tiny models: auto resolution,
refusals named in one line, bfloat16 weights through evaluation, compression and fine-tuning, and the spectra
methods' accuracy guarantee."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import char_tokenizer, tiny_llama
from safetensors import safe_open

import welore_core as wc
from welore_core.cli import main
from welore_core.compression.spectra import stream_values, values_of
from welore_core.models import check_fits, weights_dtype

pytestmark = pytest.mark.usefixtures("one_thread")


def test_auto_is_bfloat16_on_a_gpu_and_float32_on_the_cpu() -> None:
    assert weights_dtype("auto", "cuda") == torch.bfloat16 and weights_dtype("auto", "cpu") == torch.float32
    assert weights_dtype("bfloat16", "cpu") == torch.bfloat16 and weights_dtype("float16", "cuda") == torch.float16


@pytest.mark.parametrize("argv, message", [
    (["--weights-dtype", "int4"], "argument --weights-dtype: invalid choice: 'int4' (choose from 'auto', 'float32', "
                                  "'bfloat16', 'float16')"),
    (["--weights-dtype", "float16", "--device", "cpu"], "eval weights dtype float16 needs a GPU"),
    (["--device", "cuda:7"], "no such CUDA device on this machine"),
])
def test_bad_placements_are_one_line(argv: list[str], message: str, lm_dir: Path, corpus_file: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code = main(["eval", str(lm_dir), "--data", str(corpus_file), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err


def test_a_model_too_large_for_the_device_is_refused_with_the_sizes(lm_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(sys.modules["welore_core.models.placement"], "available_bytes", lambda device: 50_000)
    with pytest.raises(wc.WeLoreError, match=r"tiny-lm: 0\.00B parameters need about 0\.0 GiB in float32 on cpu, "
                                             r"which has 0\.0 GiB free"):
        wc.load_model(wc.resolve_model(lm_dir))
    check_fits("x", 10, torch.device("cpu"), torch.float32)  # fits: no error


def test_bfloat16_evaluation_is_close_to_float32_and_recorded_apart(lm_dir: Path, corpus_file: Path) -> None:
    f32 = wc.evaluate_model(lm_dir, wc.EvalConfig(data=str(corpus_file), seqlen=32, tokens=512, weights_dtype="float32"))
    bf16 = wc.evaluate_model(lm_dir, wc.EvalConfig(data=str(corpus_file), seqlen=32, tokens=512,
                                                   weights_dtype="bfloat16"))
    assert not bf16["cached"] and bf16["ppl"] != f32["ppl"]  # a run of its own in the registry
    assert bf16["ppl"] == pytest.approx(f32["ppl"], rel=0.02)
    assert len(wc.Registry.default().frame("eval")) == 2


def _bf16_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "bf16"
    tiny_llama().to(torch.bfloat16).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def test_compress_keeps_bfloat16_in_bfloat16_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _bf16_folder(tmp_path)
    code = main(["compress", str(folder), "--err", "50", "-o", str(tmp_path / "out"), "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and result["bytes_after"] == 2 * result["params_after"]
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.bfloat16}
    loaded = wc.load_model(wc.resolve_model(tmp_path / "out"), "bfloat16")
    assert any(isinstance(m, wc.LowRankLinear) for m in loaded.modules())


def _power_law(m: int, n: int, decay: float, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, min(m, n), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, min(m, n), generator=g, dtype=torch.float64))
    s = np.arange(1, min(m, n) + 1, dtype=np.float64) ** -decay * 10
    w = (u * torch.from_numpy(s)) @ v.T  # (m, n) with known singular values s
    return w.float(), np.sort(torch.linalg.svdvals(w.float().double()).numpy())[::-1]


@pytest.mark.parametrize("method", ["svdvals", "gram"])
@pytest.mark.parametrize("shape, decay", [((96, 40), 0.5), ((40, 160), 2.0), ((64, 64), 4.0)])
def test_each_method_is_within_1e_5_of_s_max_of_a_float64_svd(method: str, shape: tuple[int, int], decay: float) -> None:
    w, exact = _power_law(*shape, decay, seed=shape[0])
    got = values_of(w, "float32", method, torch.device("cpu"))
    assert got.shape == exact.shape and np.all(np.diff(got) <= 0)
    assert np.max(np.abs(got - exact)) <= 1e-5 * exact[0]


def test_bfloat16_weights_are_upcast_one_layer_at_a_time() -> None:
    w, _ = _power_law(48, 32, 1.0, seed=3)
    stored = w.to(torch.bfloat16)
    got = values_of(stored, "float32", "svdvals", torch.device("cpu"))
    exact = torch.linalg.svdvals(stored.double()).numpy()  # the values of what is stored, in float64
    assert np.max(np.abs(got - exact)) <= 1e-5 * exact[0]


def test_the_worker_pool_gives_the_values_of_one_worker() -> None:
    items = [(f"m{i}", _power_law(40 + i, 24, 1.0, seed=i)[0]) for i in range(9)]
    one = dict(stream_values(items, "float32", "svdvals", torch.device("cpu"), workers=1))
    pool = dict(stream_values(items, "float32", "svdvals", torch.device("cpu"), workers=3))
    assert set(pool) == set(one) and all(np.array_equal(pool[k], one[k]) for k in one)
    assert torch.get_num_threads() == 1  # restored to what it was (one_thread fixture)


def test_a_matrix_that_does_not_converge_names_its_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise torch.linalg.LinAlgError("did not converge")

    monkeypatch.setattr(torch.linalg, "svdvals", broken)
    with pytest.raises(wc.WeLoreError, match="layer model.layers.0.mlp.up_proj: SVD did not converge"):
        list(stream_values([("model.layers.0.mlp.up_proj", torch.ones(4, 3))], "float32", "svdvals",
                           torch.device("cpu"), workers=2))


def test_lrc_fine_tuning_with_bfloat16_frozen_weights_keeps_float32_masters(tmp_path: Path, corpus_file: Path) -> None:
    model = tiny_llama()
    report = wc.compress_to(model, wc.make_plan(wc.compute_spectra(model), wc.PlanConfig(err=50)))
    folder = wc.save_compressed(model.to(torch.bfloat16), tmp_path / "c", report)
    char_tokenizer().save_pretrained(folder)
    config = wc.FinetuneConfig(mode="lrc", data=str(corpus_file), steps=3, seqlen=32, lr=1e-2, eval_tokens=256,
                               forget_tokens=0, save_every=0, weights_dtype="bfloat16")
    assert config.precision() == "bf16"  # auto follows the half weights
    loaded = wc.load_model(wc.resolve_model(folder), "bfloat16")
    prepared = wc.prepare_model(loaded, config)
    assert {p.dtype for p in prepared.trainable.values()} == {torch.float32}
    frozen = {p.dtype for p in loaded.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16}
    result = wc.run_finetune(folder, config, tmp_path / "out")
    assert result.heldout_ppl_after < result.heldout_ppl_before
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.bfloat16}  # written like the input
    with pytest.raises(wc.WeLoreError, match="bfloat16 weights train with float32 masters under autocast"):
        wc.FinetuneConfig(data="x", weights_dtype="bfloat16", mixed_precision="no")


def test_gradient_checkpointing_and_optimizer_kinds_change_no_result(tmp_path: Path, corpus_file: Path) -> None:
    model = tiny_llama()
    report = wc.compress_to(model, wc.make_plan(wc.compute_spectra(model), wc.PlanConfig(err=50)))
    folder = wc.save_compressed(model, tmp_path / "c", report)
    char_tokenizer().save_pretrained(folder)
    base = dict(mode="lrc", data=str(corpus_file), steps=3, seqlen=32, lr=1e-2, eval_tokens=256, forget_tokens=0,
                save_every=0)
    curves = []
    for i, extra in enumerate([{"optimizer": "loop"}, {"optimizer": "foreach"},
                               {"optimizer": "loop", "gradient_checkpointing": True}]):
        result = wc.run_finetune(folder, wc.FinetuneConfig(**base, **extra), tmp_path / f"out{i}")  # type: ignore[arg-type]
        curves.append([loss for _, loss in result.loss_curve])
    assert np.allclose(curves[0], curves[1], rtol=1e-5) and np.allclose(curves[0], curves[2], rtol=1e-5)


def test_prefetch_keeps_order_and_raises_a_reading_error_in_place() -> None:
    from welore_core.compression.spectra.svd import prefetch

    assert list(prefetch(iter(range(20)), 3)) == list(range(20))

    def broken():  # type: ignore[no-untyped-def]
        yield 1
        raise wc.WeLoreError("shard 2: cannot read weights")

    got = []
    with pytest.raises(wc.WeLoreError, match="shard 2"):
        for item in prefetch(broken(), 2):
            got.append(item)
    assert got == [1]
    first = next(iter(prefetch(iter(range(1000)), 2)))  # abandoned early: the reader thread stops
    assert first == 0


def test_the_gpus_batched_gram_path_groups_by_gram_size_and_matches_one_by_one() -> None:
    from welore_core.compression.spectra.svd import _batched  # the GPU's path, run here on the CPU

    # (40, 24), (24, 40) and (64, 24) share 24 x 24 Gram matrices, so one batch; (32, 32) is its own
    items = [(f"m{i}", _power_law(*shape, 1.0, seed=i)[0]) for i, shape in
             enumerate([(40, 24), (24, 40), (64, 24), (32, 32), (40, 24), (24, 40), (40, 24)])]
    batched = dict(_batched(items, "float32", torch.device("cpu"), batch=2))
    assert set(batched) == {k for k, _ in items}
    for key, w in items:
        np.testing.assert_allclose(batched[key], values_of(w, "float32", "gram", torch.device("cpu")), rtol=1e-5, atol=1e-6)
