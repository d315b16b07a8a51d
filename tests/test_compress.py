"""Compression: the low-rank module, LRC-only vs all-layers modes, ActSVD, and compressed folders."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_gpt2, tiny_llama

import welore_core as wc
from welore_core.compression.apply import (CompressionConfig, compress_to, factor_layer, save_compressed, svd_factors,
                                           truncate_weight, whitened_factors)
from welore_core.compression.plan import plan_from_ranks
from welore_core.compression.spectra import collect_grams
from welore_core.models import MANIFEST, LowRankLinear, load_compressed


def _matrix() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(24, 40, generator=g), torch.randn(24, generator=g), torch.randn(5, 40, generator=g)


def test_low_rank_module_is_the_truncated_matrix_product() -> None:
    w, bias, x = _matrix()
    layer = LowRankLinear.from_factors(*svd_factors(w, 7), bias)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    w7 = u[:, :7] @ torch.diag(s[:7]) @ vh[:7]
    torch.testing.assert_close(layer.weight, w7, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer(x), x @ w7.T + bias, atol=1e-5, rtol=1e-5)
    assert layer.A.weight.shape == (24, 7) and layer.B.weight.shape == (7, 40)


def test_square_root_split_gives_both_factors_the_same_singular_values() -> None:
    w, _, _ = _matrix()
    a, b = svd_factors(w, 7)
    torch.testing.assert_close(torch.linalg.svdvals(a), torch.linalg.svdvals(b))


def test_gradients_reach_both_factors_and_the_bias() -> None:
    w, bias, x = _matrix()
    layer = LowRankLinear.from_factors(*svd_factors(w, 7), bias)
    layer(x).pow(2).sum().backward()
    assert layer.A.weight.grad is not None and layer.B.weight.grad is not None and layer.A.bias.grad is not None


def test_truncation_error_is_the_tail_of_the_spectrum() -> None:
    w, _, _ = _matrix()
    s = torch.linalg.svdvals(w)
    err = torch.linalg.norm(w - truncate_weight(w, 7))
    torch.testing.assert_close(err, s[7:].pow(2).sum().sqrt(), atol=1e-4, rtol=1e-4)


def test_a_rank_above_the_smaller_dimension_is_refused() -> None:
    with pytest.raises(ValueError, match="rank 41 outside"):
        LowRankLinear(40, 24, 41)


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_full_rank_factoring_reproduces_dense_logits(make) -> None:  # type: ignore[no-untyped-def]
    model = make()
    x = torch.randint(0, 64, (2, 12))
    dense = model(x).logits
    for layer in wc.discover_layers(model):
        factor_layer(model, layer.name, layer.full_rank)
    assert all(isinstance(model.get_submodule(l.name), LowRankLinear) for l in wc.discover_layers(model))
    torch.testing.assert_close(model(x).logits, dense, atol=1e-4, rtol=1e-4)


def _plan(model: torch.nn.Module, err: float, min_ratio: float = 0.5) -> dict:  # type: ignore[type-arg]
    spectra = wc.compute_spectra(model, wc.SpectraConfig(use_cache=False))
    return wc.rankmap_dict(wc.make_plan(spectra, wc.PlanConfig(err=err, min_ratio=min_ratio)))


def test_a_plan_its_rank_map_and_its_ranks_compress_alike() -> None:
    spectra = wc.compute_spectra(tiny_llama(), wc.SpectraConfig(use_cache=False))
    plan = wc.make_plan(spectra, wc.PlanConfig(err=60))
    x = torch.randint(0, 64, (2, 12))
    outputs, reports = [], []
    for target in (plan, wc.rankmap_dict(plan), plan.ranks()):
        model = tiny_llama()
        reports.append(compress_to(model, target))
        outputs.append(model(x).logits)
    assert reports[0].factored == reports[1].factored == reports[2].factored and reports[0].factored
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])
    assert reports[2].rankmap["strategy"] == "custom" and reports[0].rankmap == wc.rankmap_dict(plan)


def test_a_plan_or_ranks_that_do_not_fit_the_model_are_refused_with_every_problem() -> None:
    plan = wc.make_plan(wc.compute_spectra(tiny_gpt2(), wc.SpectraConfig(use_cache=False)), wc.PlanConfig(err=30))
    with pytest.raises(wc.RankMapError, match="does not fit this model") as caught:
        compress_to(tiny_llama(), plan)
    assert len(caught.value.problems) == len(plan.layers)
    name = wc.discover_layers(tiny_llama())[0].name
    with pytest.raises(wc.RankMapError, match=f"layer {name}: rank 0 out of range"):
        compress_to(tiny_llama(), {name: 0})


def test_lrc_mode_factors_only_lrcs_and_leaves_nlrcs_untouched() -> None:
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rankmap = _plan(model, 45)
    report = compress_to(model, rankmap, CompressionConfig(mode="lrc"))
    lrc = {e["name"]: e["rank"] for e in rankmap["layers"] if e["lrc"]}
    assert report.factored == lrc and report.truncated == {} and lrc
    for entry in rankmap["layers"]:
        module = model.get_submodule(entry["name"])
        if entry["lrc"]:
            assert isinstance(module, LowRankLinear) and module.rank == entry["rank"]
        else:
            assert torch.equal(module.weight, before[entry["name"] + ".weight"])
    assert report.params_after == report.params_before - sum(
        e["shape"][0] * e["shape"][1] - e["rank"] * sum(e["shape"]) for e in rankmap["layers"] if e["lrc"])


def test_all_layers_mode_never_grows_a_layer() -> None:
    model = tiny_llama()
    rankmap = _plan(model, 45, min_ratio=0.0)
    report = compress_to(model, rankmap, CompressionConfig(mode="all"))
    assert report.truncated and report.factored  # both cases occur at 30 %
    for entry in rankmap["layers"]:
        module = model.get_submodule(entry["name"])
        out, inp = entry["shape"]
        if entry["name"] in report.truncated:
            assert isinstance(module, torch.nn.Linear) and entry["rank"] * (out + inp) >= out * inp
            assert int(torch.linalg.matrix_rank(module.weight.double(), rtol=1e-6)) == entry["rank"]
        elif entry["rank"] < entry["full_rank"]:
            assert isinstance(module, LowRankLinear) and entry["rank"] * (out + inp) < out * inp
    assert report.params_after < report.params_before


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_compressed_folder_round_trip_is_exact_and_needs_no_svd(make, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    model = make()
    rankmap = _plan(model, 60)
    report = compress_to(model, rankmap)
    folder = save_compressed(model, tmp_path / "compressed", report)
    assert (folder / MANIFEST).is_file() and (folder / "rankmap.json").is_file()
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        names = set(fh.keys())
    first = next(iter(report.factored))
    assert {f"{first}.A.weight", f"{first}.B.weight"} <= names and f"{first}.weight" not in names

    def no_svd(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading a compressed folder must not run an SVD")

    monkeypatch.setattr(torch.linalg, "svd", no_svd)
    loaded = wc.load_model(wc.resolve_model(folder))
    x = torch.randint(0, 64, (2, 10))
    assert torch.equal(loaded(x).logits, model(x).logits)
    assert wc.resolve_model(folder).kind == "compressed"


def test_activation_whitened_svd_beats_weight_svd_on_the_activations() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 48, generator=g)
    mix = torch.randn(48, 48, generator=g) * torch.logspace(0, -2, 48)  # anisotropic, correlated inputs
    x = torch.randn(2000, 48, generator=g) @ mix.T  # (tokens, in)
    gram = x.T @ x
    for rank in (4, 12, 24):
        a_w, b_w = svd_factors(w, rank)
        a_x, b_x = whitened_factors(w, rank, gram, damp=1e-6)
        err_weight = torch.linalg.norm(x @ (w - a_w @ b_w).T)
        err_act = torch.linalg.norm(x @ (w - a_x @ b_x).T)
        assert err_act < 0.9 * err_weight


def test_act_svd_end_to_end_and_its_errors() -> None:
    model = tiny_llama()
    rankmap = _plan(model, 60)
    batches = [torch.randint(0, 64, (1, 24), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    names = [e["name"] for e in rankmap["layers"]]
    grams = collect_grams(model, batches, names)
    assert set(grams) == set(names) and grams[names[0]].shape == (32, 32)
    # averaged second moments: the same statistics from twice the data are the same scale
    doubled = collect_grams(model, batches + batches, names)
    torch.testing.assert_close(doubled[names[0]], grams[names[0]], rtol=1e-5, atol=1e-6)
    with pytest.raises(wc.WeLoreError, match="act_svd needs calibration"):
        compress_to(tiny_llama(), rankmap, CompressionConfig(act_svd=True))
    report = compress_to(model, rankmap, CompressionConfig(act_svd=True), grams)
    assert report.act_svd and report.factored


def test_rank_map_of_another_model_is_refused() -> None:
    rankmap = _plan(tiny_gpt2(), 30)
    with pytest.raises(wc.RankMapError, match="does not fit this model"):
        compress_to(tiny_llama(), rankmap)
    with pytest.raises(wc.WeLoreError, match="compression mode"):
        CompressionConfig(mode="some")


def test_neox_and_tied_llama_folders_round_trip(tmp_path: Path) -> None:
    from conftest import tiny_neox
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tied = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)).eval()
    for name, model in (("neox", tiny_neox()), ("tied", tied)):
        rankmap = _plan(model, 60)
        report = compress_to(model, rankmap)
        folder = save_compressed(model, tmp_path / name, report)
        loaded = load_compressed(folder)
        x = torch.randint(0, 64, (1, 9))
        assert torch.equal(loaded(x).logits, model(x).logits), name
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight  # re-tied


def test_output_folder_that_is_not_compressed_is_never_deleted(tmp_path: Path) -> None:
    model = tiny_llama()
    rankmap = _plan(model, 60)
    report = compress_to(model, rankmap)
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(wc.WeLoreError, match="exists and is not a compressed model folder"):
        save_compressed(model, precious, report)
    assert (precious / "thesis.tex").read_text() == "years of work"
    first = save_compressed(model, tmp_path / "c", report)
    assert save_compressed(model, first, report) == first  # a compressed folder may be replaced
    with pytest.raises(wc.WeLoreError, match="is the source model"):
        save_compressed(model, tmp_path / "c2", report, source_folder=tmp_path / "c2")


def test_tied_head_is_refused_and_factored_layers_are_refactored_not_truncated() -> None:
    model = tiny_gpt2()  # GPT-2 ties lm_head to wte
    spectra = wc.compute_spectra(model, wc.SpectraConfig(with_head=True, use_cache=False))
    rankmap = wc.rankmap_dict(wc.make_plan(spectra, wc.PlanConfig(err=60)))
    with pytest.raises(wc.WeLoreError, match="tied to the input embedding"):
        compress_to(model, rankmap, CompressionConfig(mode="all"))
    llama = tiny_llama()
    compress_to(llama, _plan(llama, 60))
    factored = next(l for l in wc.discover_layers(llama) if isinstance(llama.get_submodule(l.name), LowRankLinear))
    from welore_core.compression.apply import truncate_layer

    with pytest.raises(wc.WeLoreError, match="already factored"):
        truncate_layer(llama, factored.name, 1)
    again = wc.rankmap_dict(plan_from_ranks(wc.compute_spectra(llama, wc.SpectraConfig(use_cache=False)),
                                               {factored.name: 1}, wc.PlanConfig(min_ratio=0.0)))
    report = compress_to(llama, again, CompressionConfig(mode="all"))
    assert report.factored == {factored.name: 1} and llama.get_submodule(factored.name).rank == 1


def test_damaged_compressed_folder_is_a_clear_error(tmp_path: Path) -> None:
    model = tiny_llama()
    rankmap = _plan(model, 60)
    folder = save_compressed(model, tmp_path / "c", compress_to(model, rankmap))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    with pytest.raises(wc.WeLoreError, match="weights do not load"):
        load_compressed(folder)


def test_empty_weights_in_one_thread_leaves_other_threads_real() -> None:
    """A dashboard job loading a compressed folder must not empty the weights another job is building."""
    import threading

    from welore_core.models import empty_weights

    inside, done = threading.Event(), threading.Event()
    built: dict[str, torch.nn.Linear] = {}

    def loader() -> None:
        with empty_weights():
            built["empty"] = torch.nn.Linear(4, 4)
            inside.set()
            done.wait(10)

    thread = threading.Thread(target=loader)
    thread.start()
    assert inside.wait(10)
    built["real"] = torch.nn.Linear(4, 4)  # built here while the other thread is still inside empty_weights()
    done.set()
    thread.join()
    assert built["empty"].weight.device.type == "meta" and built["real"].weight.device.type == "cpu"


def test_a_tied_model_loads_tied_while_another_thread_is_building_one(tmp_path: Path) -> None:
    """transformers disables PreTrainedModel.tie_weights for the whole process while it loads a model; two jobs
    loading at once must not leave a tied head untied (on meta, or saved without data)."""
    import threading

    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.initialization import no_tie_weights

    from welore_core.models import building

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2,
                                 tie_word_embeddings=True)).save_pretrained(tmp_path / "tied")
    inside, release = threading.Event(), threading.Event()

    def other_job() -> None:  # a concurrent from_pretrained, frozen in the middle of its build
        with building(), no_tie_weights():
            inside.set()
            release.wait(10)

    other = threading.Thread(target=other_job)
    other.start()
    assert inside.wait(10)
    loaded: list[torch.nn.Module] = []
    mine = threading.Thread(target=lambda: loaded.append(wc.load_model(wc.resolve_model(tmp_path / "tied"))))
    mine.start()
    mine.join(0.5)
    assert mine.is_alive()  # waits for the other build instead of running inside it
    release.set()
    other.join()
    mine.join(30)
    head, embed = loaded[0].get_output_embeddings().weight, loaded[0].get_input_embeddings().weight
    assert head is embed and head.device.type == "cpu"


@pytest.mark.slow
def test_threads_that_first_use_transformers_at_once_all_get_it(llama_dir: Path) -> None:
    """Two dashboard sessions opening a model at once in a fresh server: transformers' lazy module must not
    hand one of them a half-imported submodule ("cannot import name 'AutoConfig'")."""
    import subprocess
    import sys

    script = f"""
import sys, threading
import welore_core as wc
from welore_core.models import load_tokenizer, meta_model
assert "transformers" not in sys.modules
source = wc.resolve_model({str(llama_dir)!r})
gate, errors, built = threading.Barrier(8), [], []
def run(i):
    gate.wait()
    try:  # different first names: the model classes, the tokenizer classes
        built.append(type(meta_model(source)).__name__ if i % 2 else "tokenizer")
        if not i % 2:
            load_tokenizer(source)
    except wc.WeLoreError as err:
        if "tokenizer" not in str(err):
            errors.append(repr(err))
    except Exception as err:
        errors.append(repr(err))
threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors or built)
assert not errors and sorted(built) == ["LlamaForCausalLM"] * 4 + ["tokenizer"] * 4
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


@pytest.mark.parametrize("make, kwargs", [(tiny_llama, {"bias": True}), (tiny_gpt2, {})])
@pytest.mark.parametrize("mode", ["lrc", "all"])
def test_streamed_compression_equals_the_in_memory_path(make, kwargs, mode: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from welore_core.compression.apply import compress_streamed, streamable

    model = make(**kwargs)
    model.save_pretrained(tmp_path / "src", max_shard_size="20KB")  # several shards and an index
    source = wc.resolve_model(tmp_path / "src")
    assert len(source.weight_files) > 1 and streamable(source)
    plan = wc.make_plan(wc.compute_spectra(source), wc.PlanConfig(err=55, min_ratio=0.0 if mode == "all" else 0.5))
    config = CompressionConfig(mode=mode)
    reference = make(**kwargs)
    expected = compress_to(reference, plan, config)
    save_compressed(reference, tmp_path / "memory", expected)

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the streamed path must not instantiate the model")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", no_model)
    report = compress_streamed(source, plan, config, tmp_path / "streamed")
    monkeypatch.undo()
    assert (report.factored, report.truncated) == (expected.factored, expected.truncated)
    assert (report.params_before, report.params_after) == (expected.params_before, expected.params_after)
    assert len(list((tmp_path / "streamed").glob("*.safetensors"))) == len(source.weight_files)
    x = torch.randint(0, 64, (2, 11))
    streamed, memory = load_compressed(tmp_path / "streamed"), load_compressed(tmp_path / "memory")
    assert torch.equal(streamed(x).logits, memory(x).logits)


def test_a_checkpoint_with_other_tensor_names_is_not_streamed(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from welore_core.compression.apply import streamable

    model = tiny_llama()
    model.config.save_pretrained(tmp_path / "base")
    state = {k.removeprefix("model."): v.contiguous() for k, v in model.state_dict().items()}  # a base-model checkpoint
    save_file(state, str(tmp_path / "base" / "model.safetensors"))
    assert not streamable(wc.resolve_model(tmp_path / "base"))


def test_layers_fed_the_same_input_share_one_gram_matrix() -> None:
    model = tiny_llama()
    names = [l.name for l in wc.discover_layers(model)]
    batches = [torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    grams = collect_grams(model, batches, names)
    assert set(grams) == set(names)
    q, k, v = (f"model.layers.1.self_attn.{p}_proj" for p in "qkv")
    assert grams[q] is grams[k] is grams[v]  # one matrix for the three: computed and held once
    assert grams["model.layers.1.mlp.gate_proj"] is grams["model.layers.1.mlp.up_proj"]
    assert grams["model.layers.1.self_attn.o_proj"] is not grams[q]
    alone = collect_grams(model, batches, [k])  # k on its own: the same statistics
    torch.testing.assert_close(alone[k], grams[k])


def test_streamed_bf16_truncation_equals_the_in_memory_path(tmp_path: Path) -> None:
    from welore_core.compression.apply import compress_streamed

    model = tiny_llama().to(torch.bfloat16)
    model.save_pretrained(tmp_path / "src")
    source = wc.resolve_model(tmp_path / "src")
    plan = wc.make_plan(wc.compute_spectra(source), wc.PlanConfig(strategy="uniform", err=25))  # truncations
    config = CompressionConfig(mode="all")
    memory = wc.load_model(source, "bfloat16")
    expected = compress_to(memory, plan, config)
    assert expected.truncated
    compress_streamed(source, plan, config, tmp_path / "streamed")
    streamed = load_compressed(tmp_path / "streamed", "bfloat16")
    for name in expected.truncated:
        assert torch.equal(streamed.get_submodule(name).weight, memory.get_submodule(name).weight), name


def test_two_writers_of_one_folder_never_share_a_temp_folder(tmp_path: Path) -> None:
    import threading

    from welore_core.utils import atomic_folder

    target, errors = tmp_path / "out", []

    def write(tag: str) -> None:
        try:
            with atomic_folder(target) as tmp:
                for i in range(50):
                    (tmp / f"{i}.txt").write_text(tag)
        except Exception as err:  # noqa: BLE001 - any failure is the finding
            errors.append(err)

    threads = [threading.Thread(target=write, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    contents = {p.read_text() for p in target.glob("*.txt")}
    assert not errors and len(list(target.glob("*.txt"))) == 50 and len(contents) == 1  # one writer's, whole
    assert not list(tmp_path.glob(".out.*"))  # no temp or set-aside folder left
