"""The last reliability holes (issue 22): nothing lost, nothing hangs, nothing left behind, nothing fetched.

Each test builds a tiny model (or none) and cleans up after itself; device files are used only where the
platform has them, and only in a child process whose memory and time are bounded.
"""
from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import one_line, run

import welore_core as wc
from welore_core.utils import atomic_folder, check_output, os_error_message, remove_stale, write_files

ROOT = Path(__file__).resolve().parent.parent
needs_dev_zero = pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero on this platform")


# 1. data loss: no command writes at or into its source model ----------------------------------------------------

@pytest.mark.parametrize("target", ["model.safetensors", "config.json", "new.json", "sub/rm.json", "."])
def test_plan_never_writes_into_the_source_model(target: str, lm_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    before = {p.name: p.read_bytes() for p in lm_dir.iterdir()}
    link = tmp_path / "link"
    link.symlink_to(lm_dir)  # through a symlink too
    for out in (lm_dir / target, link / target):
        code, _, err = run(capsys, "plan", str(lm_dir), "--err", "30", "-o", str(out))
        assert code == 2 and "the source model" in one_line(err) and str(out) in err
    assert {p.name: p.read_bytes() for p in lm_dir.iterdir()} == before


@pytest.mark.parametrize("argv", [
    ["compress", "{model}", "--err", "50", "-o", "{model}/sub"],
    ["finetune", "{model}", "--data", "{corpus}", "--steps", "1", "-o", "{model}/tuned"],
    ["finetune", "{model}", "--data", "{corpus}", "--steps", "1", "-o", "{tmp}/t", "--checkpoint-dir", "{model}/c"],
    ["sweep", "{model}", "--errs", "30", "-o", "{model}/sweep"],
    ["sensitivity", "{model}", "-o", "{model}"],
])
def test_every_writing_command_refuses_the_source_model(argv: list[str], lm_dir: Path, corpus_file: Path,
                                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = sorted(p.name for p in lm_dir.iterdir())
    args = [a.replace("{model}", str(lm_dir)).replace("{corpus}", str(corpus_file)).replace("{tmp}", str(tmp_path))
            for a in argv]
    code, _, err = run(capsys, *args)
    assert code == 2 and "the source model" in one_line(err)
    assert sorted(p.name for p in lm_dir.iterdir()) == names


# 2.-4. hangs and unbounded memory ------------------------------------------------------------------------------

def test_a_rank_map_is_read_no_further_than_its_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from welore_core.compression.plan import rankmap

    path = tmp_path / "growing.json"
    path.write_bytes(b"{}")
    monkeypatch.setattr(rankmap, "MAX_BYTES", 16)
    real_stat = os.stat

    first: list[os.stat_result] = []

    def small(p: object, *args: object, **kwargs: object) -> os.stat_result:  # a file that grows after the check
        if str(p) != str(path):
            return real_stat(p, *args, **kwargs)  # type: ignore[arg-type]
        first.append(first[0] if first else real_stat(p))  # type: ignore[arg-type]
        path.write_bytes(b" " * 1000)
        return first[0]

    monkeypatch.setattr(os, "stat", small)
    with pytest.raises(wc.WeLoreError, match="more than 16 bytes is too large for a rank map"):
        wc.read_rankmap(path)


DEVICE_RUNNER = """
import contextlib, io, json, sys
from welore_core.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def run_guarded(argv: list[list[str]]) -> list[tuple[int, str]]:
    """`welore ARGV` for each argv in one child process with 6 GiB of address space and a time limit: a command
    that reads a device forever (the bug) fails the test with a MemoryError or a time-out, never the machine."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))

    done = subprocess.run([sys.executable, "-c", DEVICE_RUNNER, json.dumps(argv)], capture_output=True, text=True,
                          timeout=120, preexec_fn=limit, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    return [(code, err) for code, err in json.loads(done.stdout.strip().splitlines()[-1])]


@needs_dev_zero
def test_devices_and_fifos_are_refused_without_being_read(llama_dir: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """validate on /dev/zero, /dev/urandom or a FIFO; spectra, plan, validate and prepare on a folder whose
    model.safetensors links to /dev/zero: each one line, at once."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening one for reading would block forever with no writer
    rankmap = tmp_path / "rm.json"
    assert run(capsys, "plan", str(llama_dir), "--err", "30", "-o", str(rankmap))[0] == 0
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "config.json").write_bytes((llama_dir / "config.json").read_bytes())
    (linked / "model.safetensors").symlink_to("/dev/zero")
    devices = ["/dev/zero", "/dev/urandom", str(fifo)]
    commands = [["spectra", str(linked)], ["plan", str(linked), "--err", "30"], ["validate", str(rankmap), str(linked)],
                ["prepare", str(linked)]]
    results = run_guarded([["validate", d, str(llama_dir)] for d in devices] + commands)
    for device, (code, err) in zip(devices, results):
        assert code == 2 and one_line(err) == f"rank map {device}: cannot read (is a device, pipe or socket, not a " \
                                              "rank map file)"
    for code, err in results[len(devices):]:
        assert code == 2 and one_line(err) == f"{linked / 'model.safetensors'}: is a device, pipe or socket, not a " \
                                              "weight file"


def _lying_header(path: Path, name: str) -> Path:
    """193 bytes whose header claims a [100000, 100000] float32 tensor (40 GB)."""
    header = json.dumps({name: {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 40_000_000_000]}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\0" * 16)
    return path


@pytest.mark.parametrize("command", ["spectra", "plan", "validate", "prepare"])
def test_a_header_claiming_more_than_the_file_holds_is_one_line(command: str, llama_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    rankmap = tmp_path / "rm.json"
    assert run(capsys, "plan", str(llama_dir), "--err", "30", "-o", str(rankmap))[0] == 0
    weights = _lying_header(llama_dir / "model.safetensors", "model.layers.0.mlp.up_proj.weight")
    assert weights.stat().st_size < 200
    argv = {"plan": ["plan", str(llama_dir), "--err", "30"], "validate": ["validate", str(rankmap), str(llama_dir)]}
    code, _, err = run(capsys, *argv.get(command, [command, str(llama_dir)]))
    assert code == 2 and one_line(err) == (f"{weights}: not a readable safetensors file (tensor "
                                           "model.layers.0.mlp.up_proj.weight: claims bytes up to 40,000,000,000 but "
                                           "the file holds 16 bytes of tensor data)")


def test_header_entries_are_checked_one_by_one(tmp_path: Path) -> None:
    def header(entry: dict[str, object]) -> Path:
        text = json.dumps({"w": entry}).encode()
        path = tmp_path / "w.safetensors"
        path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 8)
        return path

    cases = {"offsets [0, 4] do not span the 8 bytes of F32 [2]": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]},
             "negative dimension in shape [-2]": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]},
             "offsets [8, 0] are not a range": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]},
             "malformed entry": {"dtype": "F32", "shape": "two"}}
    for problem, entry in cases.items():
        with pytest.raises(wc.WeLoreError, match=re.escape(f"(tensor w: {problem}")):
            wc.models.read_header(header(entry))
    assert wc.models.read_header(header({"dtype": "U32", "shape": [2], "data_offsets": [0, 8]}))  # another dtype


def test_a_huge_dynamics_model_is_refused_before_it_is_built(tmp_path: Path, corpus_file: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "huge.json"
    config.write_text(json.dumps({
        "model": {"hidden_size": 1_048_576, "intermediate_size": 512, "num_hidden_layers": 2,
                  "num_attention_heads": 8, "max_position_embeddings": 64},
        "train": {"steps": 2, "every": 1, "batch_size": 2, "seqlen": 16, "lr": 0.001, "warmup": 0}}))
    code, _, err = run(capsys, "dynamics", "--config", str(config), "--data", str(corpus_file), "--tokenizer", "char",
                       "-o", str(tmp_path / "run"))
    message = one_line(err)
    assert code == 2 and message.startswith(f"config {str(config)!r}: ") and "GiB in float32 (weights, gradients " \
        "and two AdamW moments) on cpu" in message and message.endswith("choose a smaller model")
    assert not (tmp_path / "run").exists()


# 5. unknown keys, and settings that cannot work -----------------------------------------------------------------

@pytest.mark.parametrize("edit, message", [
    ({"descripton": "x"}, "unknown key 'descripton'; did you mean 'description'?"),
    ({"model": {"rms_norm_epsilon": 1e-5}}, "unknown LlamaConfig field 'rms_norm_epsilon'; did you mean 'rms_norm_eps'?"),
    ({"model": {"hiden_size": 64}}, "unknown LlamaConfig field 'hiden_size'; did you mean 'hidden_size'?"),
])
def test_unknown_keys_in_a_dynamics_config_are_refused(edit: dict[str, object], message: str, tmp_path: Path) -> None:
    data: dict[str, object] = {
        "model": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "max_position_embeddings": 64},
        "train": {"steps": 2, "every": 1, "batch_size": 2, "seqlen": 16, "lr": 0.001, "warmup": 0}}
    for key, value in edit.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value  # type: ignore[dict-item]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(wc.WeLoreError, match=message.replace("?", r"\?")):
        wc.DynamicsConfig(preset=str(path))


@pytest.mark.parametrize("argv, message", [
    (["sweep", "{model}", "--errs", "30", "--strategies", "whitened"], "--strategies whitened needs --calib PATH"),
    (["sweep", "{model}", "--errs", "30", "--strategies", "welore,fisher"], "--strategies fisher needs --calib PATH"),
    (["plan", "{model}", "--params", "0"], "--params 0 removes nothing"),
    (["compress", "{model}", "--params", "0", "-o", "{tmp}/c"], "--params 0 removes nothing"),
    (["sweep", "{model}", "--params", "0,10"], "--params 0 removes nothing"),
    (["sweep", "{model}", "--errs", "30,,40"], "--errs has an empty item in '30,,40'"),
    (["sweep", "{model}", "--strategies", "welore,"], "--strategies has an empty item in 'welore,'"),
    (["finetune", "{model}", "--data", "{corpus}", "--mode", "lora", "--lora-alpha", "nan", "-o", "{tmp}/t"],
     "lora_alpha must be a positive number, got nan"),
    (["finetune", "{model}", "--data", "{corpus}", "--mixed-precision", "fp16", "--device", "cpu", "-o", "{tmp}/t"],
     "mixed_precision fp16 needs a GPU"),
    (["finetune", "{model}", "--data", "{corpus}", "--mode", "lora", "--lora-rank", "100000", "--steps", "1",
      "--seqlen", "16", "--eval-tokens", "32", "--forget-tokens", "0", "-o", "{tmp}/t"],
     "lora_rank 100000 is above the full rank of every matrix it applies to (at most 32 in LlamaForCausalLM)"),
])
def test_settings_that_cannot_work_are_refused_in_one_line(argv: list[str], message: str, lm_dir: Path,
                                                           corpus_file: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.replace("{model}", str(lm_dir)).replace("{corpus}", str(corpus_file)).replace("{tmp}", str(tmp_path))
            for a in argv]
    code, _, err = run(capsys, *args)
    assert code == 2 and message in one_line(err)
    assert not (tmp_path / "t").exists() and not (tmp_path / "t.checkpoints").exists()


def test_an_oversized_galore_rank_is_a_warning_and_the_run_goes_on(lm_dir: Path, corpus_file: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "finetune", str(lm_dir), "--data", str(corpus_file), "--mode", "galore", "--galore-rank",
                       "100000", "--steps", "1", "--seqlen", "16", "--eval-tokens", "32", "--forget-tokens", "0",
                       "-o", str(tmp_path / "g"))
    lines = [line for line in err.splitlines() if line.startswith("welore: ")]
    assert code == 0 and lines == ["welore: warning: galore_rank 100000 is above the full rank of every matrix it "
                                   "applies to (at most 32 in LlamaForCausalLM): GaLore projects nothing away and "
                                   "trains as plain AdamW"]


def test_a_rank_map_of_other_weights_is_applied_with_a_warning(lm_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    rankmap = tmp_path / "rm.json"
    assert run(capsys, "plan", str(lm_dir), "--err", "60", "-o", str(rankmap))[0] == 0
    code, _, err = run(capsys, "compress", str(lm_dir), "--rankmap", str(rankmap), "-o", str(tmp_path / "same"))
    assert code == 0 and "warning" not in err
    data = json.loads(rankmap.read_text())
    data["fingerprint"] = "ab" * 32
    rankmap.write_text(json.dumps(data))
    code, _, err = run(capsys, "compress", str(lm_dir), "--rankmap", str(rankmap), "-o", str(tmp_path / "other"))
    warnings = [line for line in err.splitlines() if line.startswith("welore: warning: ")]
    assert code == 0 and len(warnings) == 1 and "made on other weights" in warnings[0] and "abababababababab" in warnings[0]


# 6.-7. tracebacks --------------------------------------------------------------------------------------------------

def test_a_registry_on_a_full_disk_says_so_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from welore_core.evaluation import registry as module

    def io_error(path: object, timeout: float = 0) -> sqlite3.Connection:  # SQLite's word for a full WAL device
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(module.sqlite3, "connect", io_error)
    monkeypatch.setattr(module, "free_bytes", lambda path: 4096)
    db = tmp_path / "registry.sqlite"
    with pytest.raises(wc.WeLoreError) as caught:
        wc.Registry(db).lookup("key")
    assert str(caught.value) == (f"run registry {db}: no space left on its device (SQLite: 'disk I/O error', 0.0 MiB "
                                 "free); free some space, or set WELORE_CACHE to a folder on another disk")
    monkeypatch.setattr(module, "free_bytes", lambda path: 2**30)  # room to spare: a damaged file, not a full disk
    with pytest.raises(wc.WeLoreError, match=r"registry\.sqlite: disk I/O error; if the file is damaged, move it aside"):
        wc.JobStore(db).list()


# 8.-9. leftovers ---------------------------------------------------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from welore_core.utils import atomic_folder
with atomic_folder(Path(sys.argv[1])) as tmp:
    (tmp / "part.bin").write_bytes(b"x" * 1000)
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_killed_writer_leaves_nothing_for_long(tmp_path: Path) -> None:
    target = tmp_path / "out"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        live = sorted(p.name for p in tmp_path.iterdir())
        assert len(live) == 2 and remove_stale(target) == []  # a live writer's folder and lock stay
        writer.kill()  # kill -9: no cleanup code runs
        writer.wait(10)
    finally:
        writer.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == live  # left behind by the dead writer
    with atomic_folder(target) as tmp:
        (tmp / "done").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_killed_compression_is_cleaned_by_the_next_one(lm_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cp"
    stale = tmp_path / ".cp.tmp-abc123"  # a writer from before the locks: no lock file, an hour old
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 4096)
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    recent = tmp_path / ".cp.tmp-def456"  # maybe still being written by such a writer: kept for now
    recent.mkdir()
    code, _, _ = run(capsys, "compress", str(lm_dir), "--err", "50", "-o", str(out))
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".cp")) == [recent.name]


def test_a_failed_lora_run_leaves_no_base_and_no_checkpoint_folder(lm_dir: Path, corpus_file: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from welore_core.finetune.loop import Session

    def fails(self: Session, data: object, step: int) -> tuple[float, int]:
        raise wc.WeLoreError("lora: the training loss became nan at step 1")

    monkeypatch.setattr(Session, "_step", fails)
    config = wc.FinetuneConfig(mode="lora", data=str(corpus_file), steps=2, seqlen=16, eval_tokens=32,
                               forget_tokens=0, save_every=0)
    with pytest.raises(wc.WeLoreError, match="loss became nan"):
        wc.run_finetune(lm_dir, config, tmp_path / "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "corpus.txt", "tiny-lm"]


def test_a_report_that_does_not_fit_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from welore_core.utils import storage

    calls: list[Path] = []
    real = storage.atomic_write_bytes

    def second_fails(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise storage.no_space(path, len(data))
        real(path, data)

    monkeypatch.setattr(storage, "atomic_write_bytes", second_fails)
    with pytest.raises(wc.WeLoreError, match="no space left on its device"):
        write_files(tmp_path / "new" / "report", {"a.csv": "1", "b.json": "{}"})
    assert not (tmp_path / "new" / "report").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    calls.clear()
    with pytest.raises(wc.WeLoreError):
        write_files(kept, {"a.csv": "1", "b.json": "{}"})
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]  # a folder it did not make stays, minus its writes


def test_sweep_on_a_full_disk_leaves_no_output_folder(lm_dir: Path, corpus_file: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from welore_core.utils import storage

    out = tmp_path / "sweep"
    real = storage.atomic_write_bytes

    def full(path: Path, data: bytes) -> None:  # the report's disk is full; caches and the registry are elsewhere
        if out in path.parents:
            raise storage.no_space(path, len(data))
        real(path, data)

    monkeypatch.setattr(storage, "atomic_write_bytes", full)
    out = tmp_path / "sweep"
    code, _, err = run(capsys, "sweep", str(lm_dir), "--errs", "50", "--data", str(corpus_file), "--seqlen", "32",
                       "--tokens", "64", "-o", str(out))
    assert code == 2 and "no space left on its device" in one_line(err) and not out.exists()


# 10. reports open offline ------------------------------------------------------------------------------------------

def test_html_reports_load_plotly_from_beside_them(lm_dir: Path, corpus_file: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sens"
    code, _, _ = run(capsys, "sensitivity", str(lm_dir), "--data", str(corpus_file), "--seqlen", "32", "--tokens",
                     "64", "-o", str(out))
    assert code == 0
    page = (out / "sensitivity.html").read_text()
    sources = re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", page)
    assert sources == ["plotly.min.js"]  # relative: nothing from a network
    bundle = (out / "plotly.min.js").read_bytes()
    assert len(bundle) > 1_000_000 and b"plotly.js" in bundle[:2000]


# 11. escaping is tested with the dashboard (test_dashboard.test_user_text_reaches_the_page_as_plain_text) ----------

# checked too late, messages, permissions ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["sweep", "sensitivity"])
@pytest.mark.parametrize("output, message", [("afile", "exists and is not a folder"),
                                             ("/proc/welore-x", "cannot create anything in /proc")])
def test_a_bad_output_is_refused_before_any_work(command: str, output: str, message: str, lm_dir: Path,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    if output.startswith("/proc") and not Path("/proc").is_dir():
        pytest.skip("no /proc on this platform")
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before -o was checked")

    for module in ("runs", "sensitivity", "sweep"):
        monkeypatch.setattr(sys.modules[f"welore_core.evaluation.{module}"], "load_for_eval", no_work)
    (tmp_path / "afile").write_text("x")
    target = str(tmp_path / output) if output == "afile" else output
    code, _, err = run(capsys, command, str(lm_dir), "-o", target)
    assert code == 2 and message in one_line(err) and "no space" not in err


def test_compress_to_proc_is_not_reported_as_a_full_disk(lm_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not Path("/proc").is_dir():
        pytest.skip("no /proc on this platform")
    code, _, err = run(capsys, "compress", str(lm_dir), "--err", "50", "-o", "/proc/welore-x")
    assert code == 2 and "cannot create anything in /proc" in one_line(err) and "no space" not in err


def test_a_space_refusal_names_the_headroom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from welore_core.utils import storage

    monkeypatch.setattr(storage, "free_bytes", lambda path: int(8.3 * 2**20))
    with pytest.raises(wc.WeLoreError) as caught:  # 7.4 MiB fit in 8.3 MiB, but not with the headroom
        storage.check_space(tmp_path / "x", int(7.4 * 2**20))
    assert "needs about 7.4 MiB plus 1.1 MiB headroom for the filesystem, 8.3 MiB free" in str(caught.value)
    storage.check_space(tmp_path / "x", 6 * 2**20)


@pytest.mark.parametrize("error, text", [
    (PermissionError(errno.EACCES, "Permission denied", "/srv/out"),
     "/srv/out: permission denied: choose a path you can write, or fix its permissions"),
    (FileExistsError(errno.EEXIST, "File exists", "/srv/out"), "/srv/out: already exists: choose a new path"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), "/mnt/ro/x: read-only file system: write elsewhere"),
])
def test_os_errors_name_the_path_and_what_to_do(error: OSError, text: str, llama_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert os_error_message(error).startswith(text)

    def raises(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(sys.modules["welore_core.cli.analyse"], "compute_spectra", raises)
    code, _, err = run(capsys, "spectra", str(llama_dir))
    assert code == 2 and one_line(err).startswith(text) and "Error" not in err


def test_output_folders_follow_the_umask(lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = os.umask(0o022)
    try:
        assert run(capsys, "compress", str(lm_dir), "--err", "50", "-o", str(tmp_path / "cp"))[0] == 0
        with atomic_folder(tmp_path / "made") as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(before)
    for folder in (tmp_path / "cp", tmp_path / "made"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder


def test_check_output_accepts_what_it_should(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    assert check_output(tmp_path / "a" / "b" / "rm.json", folder=False, protected=(model,)) == tmp_path / "a/b/rm.json"
    assert not (tmp_path / "a").exists()  # the probe leaves nothing
    (tmp_path / "old.json").write_text("{}")
    check_output(tmp_path / "old.json", folder=False, protected=(model,))  # a file to replace
    check_output(tmp_path / "model-compressed", folder=True, protected=(model,))  # a sibling with a shared prefix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "old.json"]


def test_beside_a_bare_checkpoint_is_allowed_but_not_over_it(lm_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bare .safetensors file may sit in any folder of the user's: only the file (and its config) is guarded."""
    weights = lm_dir / "model.safetensors"
    code, _, _ = run(capsys, "compress", str(weights), "--err", "60", "-o", str(lm_dir / "compressed"))
    assert code == 0 and (lm_dir / "compressed" / "welore-manifest.json").is_file()
    code, _, err = run(capsys, "plan", str(weights), "--err", "30", "-o", str(lm_dir / "config.json"))
    assert code == 2 and "is the source model" in one_line(err)
