"""Compressed folders leave the tool (issue 26): plain transformers loads them with trust_remote_code (no
welore_core), the merged export, the model card, and generated text."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import one_line, run, tiny_gpt2, tiny_llama, tiny_neox

import welore_core as wc
from welore_core.models import MANIFEST, load_tokenizer

LOAD = """
import sys
sys.modules["welore_core"] = None  # plain transformers: the tool cannot be imported here
import json
import torch
import transformers
from transformers import AutoModelForCausalLM

made = []  # every linear layer built while loading, and where its weight was made
def spy(init):
    def wrapped(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append((type(self).__name__, tuple(self.weight.shape), self.weight.device.type))
    return wrapped
torch.nn.Linear.__init__ = spy(torch.nn.Linear.__init__)
transformers.pytorch_utils.Conv1D.__init__ = spy(transformers.pytorch_utils.Conv1D.__init__)
folder, ids, out = sys.argv[1], torch.tensor(json.loads(sys.argv[2])), sys.argv[3]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32)
with torch.no_grad():
    torch.save({"logits": model(ids).logits, "made": made, "class": type(model).__name__,
                "params": sum(p.numel() for p in model.parameters())}, out)
"""


def _compressed(build, tmp_path: Path, mode: str = "all") -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    dense = tmp_path / f"{build.__name__}-dense"
    build().save_pretrained(dense)
    model = wc.load_model(wc.resolve_model(dense))
    report = wc.compress_to(model, wc.make_plan(wc.compute_spectra(dense), wc.PlanConfig(err=60)),
                            wc.CompressionConfig(mode=mode))
    return dense, wc.save_compressed(model, tmp_path / f"{build.__name__}-compressed", report, dense, dense.name)


@pytest.mark.slow  # a fresh Python process per architecture
@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2, tiny_neox], ids=["llama", "gpt2", "neox"])
def test_plain_transformers_loads_the_folder_without_welore_core(build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, folder = _compressed(build, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    ids = torch.randint(0, config["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(0))
    done = subprocess.run([sys.executable, "-c", LOAD, str(folder), json.dumps(ids.tolist()), str(tmp_path / "o.pt")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(tmp_path / "o.pt", weights_only=False)
    native = wc.load_model(wc.resolve_model(folder))
    with torch.no_grad():
        assert torch.equal(got["logits"], native(ids).logits)  # identical, not close
    assert got["class"] == f"WeLore{config['welore']['base_architecture']}"
    assert got["params"] == wc.count_parameters(native)
    assert got["made"] and all(device == "meta" for _, _, device in got["made"])  # nothing dense was ever made
    manifest = json.loads((folder / MANIFEST).read_text())
    assert config["welore"]["factored"] == manifest["factored"] and config["model_type"].startswith("welore_")


def test_without_trust_remote_code_transformers_refuses_instead_of_guessing(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    _, folder = _compressed(tiny_llama, tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        AutoModelForCausalLM.from_pretrained(folder)


def test_a_missing_or_altered_modeling_file_is_named_and_old_folders_still_load(tmp_path: Path) -> None:
    _, folder = _compressed(tiny_llama, tmp_path, mode="lrc")
    ids = torch.arange(10)[None]
    with torch.no_grad():
        want = wc.load_model(wc.resolve_model(folder))(ids).logits
    modeling = folder / "modeling_welore.py"
    text = modeling.read_text()
    modeling.write_text(text + "\nprint('hello')\n")
    with pytest.raises(wc.WeLoreError, match="modeling_welore.py: altered since it was written"):
        wc.load_model(wc.resolve_model(folder))
    modeling.unlink()
    with pytest.raises(wc.WeLoreError, match="modeling_welore.py is missing; plain transformers cannot load"):
        wc.load_model(wc.resolve_model(folder))
    # a folder written before this format: the base config, no modeling file, no digest in the manifest
    config = json.loads((folder / "config.json").read_text())
    base = {k: v for k, v in config.items() if k not in ("welore", "auto_map")}
    base.update(model_type=config["welore"]["base_model_type"], architectures=[config["welore"]["base_architecture"]])
    (folder / "config.json").write_text(json.dumps(base))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest.pop("modeling")
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with torch.no_grad():
        assert torch.equal(wc.load_model(wc.resolve_model(folder))(ids).logits, want)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2-conv1d"])
def test_the_merged_export_is_a_plain_checkpoint_with_the_same_outputs(build, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoModelForCausalLM

    dense, folder = _compressed(build, tmp_path)
    code, _, err = run(capsys, "export", str(folder), "--merged", "-o", str(tmp_path / "merged"), "--json")
    assert code == 0, err
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)  # no remote code
    assert type(merged).__name__ == json.loads((dense / "config.json").read_text())["architectures"][0]
    ids = torch.randint(0, merged.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = wc.load_model(wc.resolve_model(folder))(ids).logits, merged(ids).logits
    assert float((got - want).norm() / want.norm()) < 1e-4
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in build().parameters())
    assert "tags:\n- welore" in (tmp_path / "merged" / "README.md").read_text()
    code, _, err = run(capsys, "export", str(dense), "--merged", "-o", str(tmp_path / "again"))
    assert code == 2 and one_line(err).endswith("is not a compressed folder: there are no factors to merge (it is "
                                                 "already a plain checkpoint)")


def test_the_model_card_gives_the_plan_the_load_lines_and_each_measurement(lm_dir: Path, corpus_file: Path,
                                                                          tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "c"
    assert run(capsys, "compress", str(lm_dir), "--err", "50", "-o", str(folder))[0] == 0
    card = (folder / "README.md").read_text()
    front = card.split("---")[1]
    assert "base_model: tiny-lm" in front and "library_name: transformers" in front and "- welore" in front
    rankmap = json.loads((folder / "rankmap.json").read_text())
    lrc = sum(e["lrc"] for e in rankmap["layers"])
    assert f"| achieved ERR | {rankmap['achieved_err']:.2f} % |" in card and f"| LRCs (rank < half) | {lrc} of" in card
    assert f'AutoModelForCausalLM.from_pretrained("{folder}", trust_remote_code=True)' in card
    assert "Not measured yet" in card
    assert run(capsys, "eval", str(folder), "--data", str(corpus_file), "--seqlen", "32", "--tokens", "256")[0] == 0
    ppl = wc.Registry.default().frame("eval")["ppl"].iloc[0]
    assert f"| perplexity | {corpus_file} (windows of 32, 256 tokens) | {ppl:.3f} |" in (folder / "README.md").read_text()
    (folder / "README.md").write_text("my own notes")  # a card the user wrote is never overwritten
    assert run(capsys, "eval", str(folder), "--data", str(corpus_file), "--seqlen", "32", "--tokens", "256")[0] == 0
    assert (folder / "README.md").read_text() == "my own notes"
    code, _, err = run(capsys, "card", str(folder))
    assert code == 2 and "was not written by WeLore Studio; move it away" in one_line(err)


def test_generate_streams_greedy_text_beside_the_dense_model(lm_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "c"
    assert run(capsys, "compress", str(lm_dir), "--err", "60", "--all-layers", "-o", str(folder))[0] == 0
    code, out, err = run(capsys, "generate", str(folder), "--prompt", "the king", "--max-new-tokens", "6",
                         "--compare", "--json", "-v")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert [c["role"] for c in result["continuations"]] == ["compressed", "dense"]
    assert "--- compressed: c ---" in out and "--- dense: tiny-lm ---" in out
    tokenizer = load_tokenizer(wc.resolve_model(folder))
    for continuation, spec in zip(result["continuations"], (folder, lm_dir)):
        model = wc.load_model(wc.resolve_model(spec))
        ids = tokenizer("the king", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            for _ in range(6):  # greedy, by hand
                ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        assert continuation["text"] == tokenizer.decode(ids[0, len(tokenizer("the king")["input_ids"]):],
                                                        skip_special_tokens=True)
        assert continuation["text"] in out  # streamed as it was made
    code, _, err = run(capsys, "generate", str(folder), "--prompt", "  ")
    assert code == 2 and one_line(err) == "the prompt is empty: give the text to continue"
    code, _, err = run(capsys, "generate", str(folder), "--prompt", "x" * 80)
    assert code == 2 and one_line(err) == "the prompt is 80 tokens; the model has 64 positions: shorten it"
