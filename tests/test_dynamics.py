"""Gradient-dynamics lab (issue 7) on the tiny preset: records, cosines, sketches, spectra, resume, page, CLI."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import welore_core as wc
from welore_core.compression.plan import normalize
from welore_core.data import load_corpus as load_text
from welore_core.data import split_probe, tokenize
from welore_core.dynamics import (DynamicsConfig, EmergenceConfig, build_model, claim_check, cosine_matrix,
                                  count_sketch, emergence_summary, gradient_cosine, gradient_cosines, gradient_vectors,
                                  load_run, run_dynamics, spectra_over_time)
from welore_core.evaluation import JobCancelled

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "page_dynamics.py")
# tiny preset, cut down so a whole run (4 records of 28 layers) takes about a second
SMALL_RUN = {"preset": "tiny", "data": "tinyshakespeare", "steps": 6, "every": 2, "batch_size": 4, "seqlen": 32,
             "probe_batch": 4, "sketch_dim": 1024, "device": "cpu"}


def sketch_tolerance(c: np.ndarray, m: int) -> np.ndarray:
    """Four standard errors of a sketched cosine, (1 − c²)/sqrt(m), plus float16 rounding of the stored side."""
    return 4 * (1 - c**2) / math.sqrt(m) + 2e-3


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny run shared by the read-only tests."""
    base = tmp_path_factory.mktemp("dynamics")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WELORE_CACHE", str(base / "cache"))
        run_dynamics(DynamicsConfig(**SMALL_RUN), base / "run")
    torch.set_num_threads(before)
    return base / "run"


def test_recorded_artefacts_have_the_expected_shapes(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert run.steps.tolist() == [0, 2, 4, 6] and run.meta["status"] == "done" and run.meta["step"] == 6
    fresh = wc.discover_layers(build_model(DynamicsConfig(**SMALL_RUN), 256))
    assert [l.name for l in run.layers] == [l.name for l in fresh] and len(run.layers) == 28
    assert run.layers[0].name == "model.layers.0.self_attn.q_proj"
    for field, size in (("grad_sv", "rank"), ("weight_sv", "rank"), ("sketch", 1024), ("grad", "numel")):
        series = run.series(field)
        for layer in run.layers:
            want = layer.full_rank if size == "rank" else layer.shape[0] * layer.shape[1] if size == "numel" else size
            assert [np.asarray(a).shape for a in series[layer.name]] == [(want,)] * 4, (field, layer.name)
    assert run.series("grad")[run.layers[0].name][0].dtype == np.float16
    assert np.load(run_dir / "probe.npy").shape == (4, 32)
    assert len(run.losses()) == 6 and np.isfinite(run.scalars("probe_loss")).all()
    # the saved model is a HF folder the rest of the tool reads: its spectra are the last record's
    spectra = wc.compute_spectra(run_dir / "model", wc.SpectraConfig(use_cache=False))
    last = run.series("weight_sv")
    for layer in run.layers:
        np.testing.assert_allclose(spectra.values[layer.name], last[layer.name][-1], rtol=1e-5, atol=1e-6)


def test_step_zero_records_the_seeded_initialisation(run_dir: Path) -> None:
    run = load_run(run_dir)
    model = build_model(DynamicsConfig(**SMALL_RUN), 256)
    for layer in run.layers[:7]:
        direct = torch.linalg.svdvals(model.get_submodule(layer.name).weight.detach()).numpy()
        np.testing.assert_allclose(spectra_over_time(run, layer.name, "weight")[0], direct, rtol=1e-5, atol=1e-6)


def test_cosine_of_a_gradient_with_itself_is_one(run_dir: Path) -> None:
    run = load_run(run_dir)
    for source in ("full", "sketch"):
        for cos, used in gradient_cosines(run, source).values():
            assert used == source and cos.shape == (4, 4)
            np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-12)
            np.testing.assert_allclose(cos, cos.T, atol=1e-12)
    g = np.random.default_rng(0).normal(size=500)
    np.testing.assert_allclose(cosine_matrix(np.stack([g, 3 * g, -g])), [[1, 1, -1], [1, 1, -1], [-1, -1, 1]], atol=1e-12)
    assert np.isnan(cosine_matrix(np.stack([g, np.zeros(500)]))[1]).all()  # a zero gradient has no direction


def test_count_sketch_cosine_is_within_four_standard_errors() -> None:
    rng = np.random.default_rng(1)
    n, m = 200_000, 4096
    x = rng.standard_normal(n)
    z = rng.standard_normal(n)
    z -= (z @ x) / (x @ x) * x
    x, z = x / np.linalg.norm(x), z / np.linalg.norm(z)
    for c in (0.0, 0.5, 0.9, 0.99):
        y = c * x + math.sqrt(1 - c**2) * z  # exact cosine c with x
        sx, sy = (count_sketch(torch.from_numpy(v).float(), m, 7).numpy() for v in (x, y))
        estimate = float(sx @ sy / np.linalg.norm(sx) / np.linalg.norm(sy))
        assert abs(estimate - c) <= 4 * (1 - c**2) / math.sqrt(m) + 1e-4, (c, estimate)
    a, b = torch.randn(1000), torch.randn(1000)  # linear, so sketches of one layer can be compared and summed
    torch.testing.assert_close(count_sketch(2 * a - b, 64, 3), 2 * count_sketch(a, 64, 3) - count_sketch(b, 64, 3))


def test_recorded_sketches_approximate_the_recorded_gradients(run_dir: Path) -> None:
    run = load_run(run_dir)
    full, sketch = gradient_cosines(run, "full"), gradient_cosines(run, "sketch")
    for name in full:
        exact = full[name][0]
        assert (np.abs(sketch[name][0] - exact) <= sketch_tolerance(exact, 1024)).all(), name


def test_recorded_spectra_match_a_direct_svd_of_the_final_model(run_dir: Path) -> None:
    from transformers import LlamaForCausalLM

    run = load_run(run_dir)
    model = LlamaForCausalLM.from_pretrained(run_dir / "model").train()
    probe = torch.from_numpy(np.load(run_dir / "probe.npy"))
    model(input_ids=probe, labels=probe).loss.backward()
    grad_sv, weight_sv, unit = run.series("grad_sv"), run.series("weight_sv"), run.series("grad")
    norms = run.series("grad_norm")
    for layer in run.layers:
        weight = model.get_submodule(layer.name).weight
        s = torch.linalg.svdvals(weight.grad).numpy()
        np.testing.assert_allclose(grad_sv[layer.name][-1], s, rtol=1e-3, atol=1e-4 * s[0])
        np.testing.assert_allclose(weight_sv[layer.name][-1], torch.linalg.svdvals(weight.detach()).numpy(), rtol=1e-5,
                                   atol=1e-6)
        g = weight.grad.reshape(-1).double().numpy()
        assert float(norms[layer.name][-1]) == pytest.approx(np.linalg.norm(g), rel=1e-4)
        stored = np.asarray(unit[layer.name][-1], dtype=np.float64)
        assert float(stored @ g / np.linalg.norm(stored) / np.linalg.norm(g)) > 1 - 1e-5  # float16 unit vector


def test_resume_after_interruption_ends_in_the_same_state(run_dir: Path, tmp_path: Path) -> None:
    config = DynamicsConfig(**SMALL_RUN)
    folder = tmp_path / "resumed"

    def stop_at_five(done: int, total: int, message: str) -> None:
        if done == 5:
            raise JobCancelled(message)

    with pytest.raises(JobCancelled):
        run_dynamics(config, folder, stop_at_five)
    meta = json.loads((folder / "run.json").read_text())
    assert (meta["status"], meta["step"], meta["recorded"]) == ("interrupted", 4, [0, 2, 4])
    result = run_dynamics(config, folder)
    assert result["resumed_from"] == 4 and result["recorded"] == [0, 2, 4, 6]
    ours = torch.load(folder / "checkpoint.pt", weights_only=True)
    theirs = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ours["step"] == theirs["step"] == 6 and ours["losses"] == theirs["losses"]
    for key, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][key], tensor), key
    for key, state in theirs["optimizer"]["state"].items():
        assert torch.equal(ours["optimizer"]["state"][key]["exp_avg_sq"], state["exp_avg_sq"])
    with np.load(folder / "records" / "step-0000006.npz") as a, np.load(run_dir / "records" / "step-0000006.npz") as b:
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    again = run_dynamics(config, folder)  # a finished run answers without training
    assert again["resumed_from"] == 6 and again["probe_loss"] == result["probe_loss"]
    assert len(wc.Registry.default().frame("dynamics")) == 1


def test_a_folder_holding_another_run_or_other_files_is_refused(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(wc.WeLoreError, match="seed: 0 -> 1"):
        run_dynamics(DynamicsConfig(**{**SMALL_RUN, "seed": 1}), run_dir)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(wc.WeLoreError, match="holds no dynamics run"):
        run_dynamics(DynamicsConfig(**SMALL_RUN), tmp_path / "busy")


def test_config_fills_from_the_preset_and_names_bad_values() -> None:
    config = DynamicsConfig(preset="tiny", steps=10)
    assert (config.steps, config.every, config.seqlen, config.model["hidden_size"]) == (10, 10, 64, 64)
    assert config.record_at() == [0, 10] and DynamicsConfig(preset="tiny", steps=25, every=10).record_at() == [0, 10, 20, 25]
    with pytest.raises(wc.WeLoreError, match="'nope'.*130m, base, small, tiny"):
        DynamicsConfig(preset="nope")
    with pytest.raises(wc.WeLoreError, match="steps must be a positive integer, got 0"):
        DynamicsConfig(preset="tiny", steps=0)
    with pytest.raises(wc.WeLoreError, match="seqlen 512 is longer than the preset's 256"):
        DynamicsConfig(preset="tiny", seqlen=512)
    with pytest.raises(wc.WeLoreError, match="k must be in"):
        EmergenceConfig(k=1.5)
    params = {p: sum(x.numel() for x in build_model(DynamicsConfig(preset=p), 32000).parameters()) for p in ("tiny", "130m")}
    assert params["tiny"] < 5e6 and 120e6 < params["130m"] < 140e6  # GaLore's LLaMA-130M with a 32k vocabulary


def test_byte_and_char_tokenizers_and_a_held_out_probe(corpus_file: Path) -> None:
    corpus = load_text(str(corpus_file))
    chars = tokenize(corpus, "char")
    assert "".join(chars.tokenizer["chars"][i] for i in chars.ids) == corpus.text and chars.vocab_size < 40
    byte = tokenize(corpus, "byte")
    assert bytes(byte.ids.astype(np.uint8)).decode() == corpus.text and byte.vocab_size == 256
    train, probe = split_probe(byte.ids, 32, 4, 0.1)
    assert probe.shape == (4, 32) and len(train) == len(byte.ids) - int(0.1 * len(byte.ids))
    tail = byte.ids[len(train):]
    assert all(any(np.array_equal(tail[s: s + 32], row) for s in range(len(tail) - 31)) for row in probe.numpy())
    with pytest.raises(wc.WeLoreError, match="too short"):
        split_probe(byte.ids[:100], 32, 4, 0.1)
    with pytest.raises(wc.WeLoreError, match="no-such.txt"):
        load_text(str(corpus_file.parent / "no-such.txt"))


def test_emergence_summary_and_claim_check(run_dir: Path) -> None:
    run = load_run(run_dir)
    config = EmergenceConfig(k=0.2, tail=0.5)
    summary = emergence_summary(run, config)
    assert list(summary.columns[:4]) == ["name", "block", "kind", "shape"] and len(summary) == 28
    row = summary.iloc[0]
    w0 = spectra_over_time(run, row["name"], "weight")[0]
    assert row["w_rank_k_frac_start"] == int(np.sum(normalize(w0) >= 0.2)) / 64
    cos = gradient_cosine(run, row["name"])[0]
    assert row["g_saturation"] == pytest.approx(np.mean([cos[2, 1], cos[3, 2]]))  # tail = checkpoints 4 and 6
    assert ((summary["w_rank_k_frac_end"] > 0) & (summary["w_rank_k_frac_end"] <= 1)).all()
    # the claim's statistics on a made-up run where it holds exactly
    kinds = ["self_attn.q_proj", "mlp.down_proj"]
    fake = pd.DataFrame([{"name": f"b{b}.{k}", "block": b, "kind": k, "shape": "8x8",
                          "w_rank_k_frac_end": (0.2 if b in (0, 3) else 0.6) if k.startswith("self") else 0.9 - 0.01 * b,
                          "g_saturation": (0.1 if b in (0, 3) else 0.5) if k.startswith("self") else 0.95 - 0.01 * b}
                         for b in range(4) for k in kinds])
    claim = claim_check(fake)
    assert claim["terminal_attention_rank"] == pytest.approx(0.2) and claim["middle_mlp_rank"] == pytest.approx(0.885)
    assert claim["spearman_saturation_vs_rank"] == pytest.approx(1.0)


def test_figures_label_axes_and_name_the_layer_on_hover(run_dir: Path) -> None:
    from welore_core.figures import (emergence_heatmap_figure, export_figures, gradient_cosine_figure,
                                     saturation_figure, spectra_time_figure)

    run = load_run(run_dir)
    name = "model.layers.3.mlp.down_proj"
    cos, used = gradient_cosine(run, name)
    fig = gradient_cosine_figure(cos, run.steps, name, used)
    assert fig.data[0].z.shape == (4, 4) and {str(c) for c in np.ravel(fig.data[0].customdata)} == {name}
    assert fig.layout.xaxis.title.text == "checkpoint (training step)"
    spec = spectra_time_figure(spectra_over_time(run, name, "grad"), run.steps, name, "grad", "log")
    assert spec.data[0].z.shape == (4, 64) and spec.data[0].customdata[0, 0, 0] == name
    assert spec.layout.xaxis.title.text == "singular value index" and np.nanmax(spec.data[0].z) == 0.0
    summary = emergence_summary(run)
    heat = emergence_heatmap_figure(summary, "g_saturation")
    assert heat.data[0].z.shape == (4, 7) and set(np.ravel(heat.data[0].customdata)) == {l.name for l in run.layers}
    scatter = saturation_figure(summary)
    assert {n for t in scatter.data for n in t.customdata} == {l.name for l in run.layers}
    assert gradient_vectors(run, name, "sketch")[0].shape == (4, 1024)
    paths = export_figures(run, run_dir.parent / "figures", layers=[name])
    assert len(paths) == 9 and all(p.stat().st_size > 1000 for p in paths)
    assert all('<script charset="utf-8" src="plotly.min.js"></script>' in p.read_text() for p in paths)  # offline
    assert (run_dir.parent / "figures" / "plotly.min.js").stat().st_size > 1_000_000


def test_page_renders_a_stored_run(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WELORE_DYNAMICS_RUN", str(run_dir))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Preset"], metrics["Steps"], metrics["Checkpoints"]) == ("tiny", "6 / 6", "4")
    assert len(at.dataframe[0].value) == 28 and len(at.get("plotly_chart")) == 7
    at.slider[0].set_value(0.3).run()
    run = load_run(run_dir)
    claim = claim_check(emergence_summary(run, EmergenceConfig(k=0.3)))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Rank at k, attention in first/last blocks"] == f"{claim['terminal_attention_rank']:.3f}"
    next(s for s in at.selectbox if s.label == "Layer").set_value("model.layers.2.mlp.up_proj").run()
    assert not at.exception and not at.error


def test_page_launches_a_run_as_a_background_job(corpus_file: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from welore_core.evaluation import wait

    for key, value in {"WELORE_DYNAMICS_PRESET": "tiny", "WELORE_DYNAMICS_STEPS": "4", "WELORE_DYNAMICS_EVERY": "2",
                       "WELORE_DYNAMICS_DATA": str(corpus_file)}.items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception and "No run yet" in at.info[0].value
    at.button[0].click().run()
    assert not at.exception and not at.error
    job = at.query_params["dyn_job"]
    state = wait(job[0] if isinstance(job, list) else job, timeout=120)
    assert state.status == "done", state.error
    assert Path(state.result["folder"]).parent == wc.cache_dir() / "dynamics" and state.result["recorded"] == [0, 2, 4]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(m.label == "Checkpoints" for m in at.metric):
        at.run()
    assert {m.label: m.value for m in at.metric}["Checkpoints"] == "3" and not at.exception


def _main(argv: list[str]) -> int:
    from welore_core import cli

    return cli.main(argv)


def test_cli_contract(corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli-run"
    code = _main(["dynamics", "--config", "tiny", "--data", str(corpus_file), "--steps", "2", "--every", "1",
                  "--batch-size", "2", "--seqlen", "16", "--device", "cpu", "-o", str(out), "--json"])
    stdout, _ = capsys.readouterr()
    assert code == 0
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["folder"] == str(out) and result["recorded"] == [0, 1, 2] and len(result["summary"]) == 28
    assert all(Path(p).is_file() for p in result["artefacts"]["records"]) and len(result["artefacts"]["records"]) == 3
    assert Path(result["artefacts"]["summary"]).is_file() and (Path(result["artefacts"]["model"]) / "config.json").is_file()
    for argv, needle in ((["--steps", "0"], "steps must be a positive integer, got 0"),
                         (["--config", "huge"], "config 'huge'"),
                         (["--data", str(tmp_path / "missing.txt")], "missing.txt")):
        code = _main(["dynamics", "--config", "tiny", "-o", str(tmp_path / "bad"), "--json", *argv])
        stdout, stderr = capsys.readouterr()
        assert code == 2 and len(stderr.strip().splitlines()) == 1 and needle in stderr, stderr
        assert needle in json.loads(stdout.strip().splitlines()[-1])["error"]
