"""Zero-shot accuracy through lm-evaluation-harness, as every peer reports it (SVD-LLM, ASVD, Basis Sharing).

The harness's `HFLM` wraps the model this tool loaded (a compressed folder with its low-rank layers included),
on the chosen device and dtype, and runs the harness's own tasks. Tasks whose data sit in `$WELORE_DATA` run
offline from those files through the harness's documented local-dataset route: a task file that `include`s the
harness's own task file (its prompt, choices and metric) and swaps only the data source for the local JSON
(`dataset_path: json`), with a `process_docs` that maps the local fields onto the hub's. Any other task runs by
name from the hub (online users). Results go to the run registry, one row per task, keyed by what decides
them (fingerprint, plan, task, few-shot, limit, harness version, task file and data digests).
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import json
import math
import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from torch import nn

from ..errors import WeLoreError
from ..models import dtype_name, load_model, load_tokenizer, placement, resolve_model, source_fingerprint
from ..utils import Progress, atomic_write_text, cache_dir, data_dir, read_capped
from .attribution import folder_plan_hash, source_fields
from .harness_cache import close_request_cache, remove_request_cache, reporting_batches, request_cache
from .registry import Registry, run_key

HARNESS = "lm-eval"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
                   "merges.txt")
# task -> (the harness's own task file, relative to lm_eval/tasks; the local file under $WELORE_DATA; the
# process_docs function of tasks_local.py that maps its fields onto the hub's)
LOCAL = {"boolq": ("super_glue/boolq/default.yaml", "downstream/boolq/boolq_dev.jsonl", "boolq_docs"),
         "commonsense_qa": ("commonsense_qa/default.yaml", "downstream/CommonsenseQA/dev_rand_split.jsonl",
                            "commonsense_qa_docs")}
PROCESS = '''"""Local data in the hub's fields (written by welore_core.evaluation.zeroshot)."""


def boolq_docs(dataset):
    return dataset.map(lambda d: {"label": int(bool(d["answer"]))})


def commonsense_qa_docs(dataset):
    def hub(d):
        choices = d["question"]["choices"]
        return {"question": d["question"]["stem"], "question_concept": d["question"].get("question_concept", ""),
                "choices": {"label": [c["label"] for c in choices], "text": [c["text"] for c in choices]}}

    return dataset.map(hub)
'''


@dataclass(frozen=True)
class ZeroShotConfig:
    """Which harness tasks, and how (the harness's own names and defaults)."""

    tasks: tuple[str, ...]  # harness task names, e.g. ("boolq", "commonsense_qa")
    num_fewshot: int = 0
    limit: int | None = None  # examples per task for a preview; None = the whole split
    batch_size: int = 8
    device: str = "auto"
    weights_dtype: str = "auto"

    def __post_init__(self) -> None:
        if not self.tasks or any(not t.strip() for t in self.tasks):
            raise WeLoreError(f"tasks must be harness task names, got {list(self.tasks)!r}")
        if self.limit is not None and self.limit < 1:
            raise WeLoreError(f"limit must be at least 1 example (none: the whole split), got {self.limit}")
        if self.num_fewshot < 0 or self.batch_size < 1:
            raise WeLoreError(f"num_fewshot must be >= 0 and batch_size >= 1, got {self.num_fewshot}, "
                              f"{self.batch_size}")
        placement(self.device, self.weights_dtype, "zero-shot")


_QUIET = threading.RLock()


@contextmanager
def quiet() -> Iterator[None]:
    """The harness's own output (its logging, tqdm bars, a `git describe` it runs) kept off the terminal: this
    tool reports progress and results itself, and an error stays one line. Standard error is sent to a temporary
    file at the descriptor level for the block (the child `git` writes there too). The descriptor is the
    process's: one block at a time (two dashboard jobs would otherwise restore each other's sink)."""
    with _QUIET:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)


def local_task_names() -> list[str]:
    """The tasks that run offline here: those whose data are under $WELORE_DATA (no harness import)."""
    return [name for name, (_, data, _) in LOCAL.items() if (data_dir() / data).is_file()]


def tasks_dtype(config: ZeroShotConfig) -> Any:
    """The torch dtype the model is scored in."""
    return placement(config.device, config.weights_dtype, "zero-shot")[1]


def harness_version() -> str:
    try:
        return importlib.metadata.version(HARNESS)
    except importlib.metadata.PackageNotFoundError:
        raise WeLoreError(f"zero-shot tasks need lm-evaluation-harness: pip install {HARNESS}") from None


def local_tasks() -> tuple[Path, dict[str, str]]:
    """The folder of local task files for the tasks whose data exist under $WELORE_DATA, and each one's digest
    (task file + data): written once under cache/harness-tasks/, checked line by line (bad JSON names the file)."""
    import lm_eval

    own = Path(lm_eval.__file__).parent / "tasks"
    found = {name: (own / yaml, data_dir() / data, fn) for name, (yaml, data, fn) in LOCAL.items()
             if (data_dir() / data).is_file()}
    digests = {name: _digest(data, yaml) for name, (yaml, data, _) in found.items()}
    folder = cache_dir() / "harness-tasks" / hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]
    if not (folder / "tasks_local.py").is_file():
        for name, (yaml, data, fn) in found.items():
            atomic_write_text(folder / f"{name}.yaml", f"include: {yaml}\ntask: {name}\ndataset_path: json\n"
                              f"dataset_name: null\ndataset_kwargs:\n  data_files:\n    validation: {data}\n"
                              f"training_split: null\nvalidation_split: validation\n"
                              f"process_docs: !function tasks_local.{fn}\n")
        atomic_write_text(folder / "tasks_local.py", PROCESS)
    return folder, digests


def _digest(data: Path, yaml: Path) -> str:
    """sha256 of the local data (every line checked to be a JSON object) and of the harness task file."""
    digest = hashlib.sha256(read_capped(yaml, 2**20, "task file"))
    blob = read_capped(data, 2**30, "task data")
    for number, line in enumerate(blob.splitlines(), 1):
        if line.strip():
            try:
                if not isinstance(json.loads(line), dict):
                    raise ValueError("not a JSON object")
            except ValueError as err:
                raise WeLoreError(f"{data}: line {number} is not a JSON object ({err})") from None
    digest.update(blob)
    return digest.hexdigest()[:16]


def task_manager(tasks: tuple[str, ...]) -> tuple[Any, dict[str, str]]:
    """The harness's TaskManager with the local tasks in front, and their digests; an unknown task is one line
    with the closest names. When every task is local only their folder is indexed (the harness's own index of
    all its tasks takes about 10 s on 2 cores), once per process."""
    folder, digests = local_tasks()
    manager = _manager(str(folder), defaults=not set(tasks) <= set(digests))
    known = manager.all_tasks
    for task in tasks:
        if task not in known:
            close = difflib.get_close_matches(task, known, n=4)
            raise WeLoreError(f"unknown harness task {task!r}" + (f"; closest: {', '.join(close)}" if close else ""))
    return manager, digests


@lru_cache(maxsize=4)
def _manager(folder: str, defaults: bool) -> Any:
    from lm_eval.tasks import TaskManager

    with quiet():
        return TaskManager(include_path=folder, include_defaults=defaults)


def evaluate_tasks(spec: str | Path | None, config: ZeroShotConfig, progress: Progress | None = None,
                   registry: Registry | None = None, origin: str = "eval") -> list[dict[str, Any]]:
    """Accuracy of a model (or compressed folder) on each task: one registry row per task, an identical request
    answered from the registry."""
    source = resolve_model(spec)
    fingerprint = source_fingerprint(source)
    device, dtype = placement(config.device, config.weights_dtype, "zero-shot")
    identity = {"fingerprint": fingerprint, "plan_hash": folder_plan_hash(source),
                "tokenizer": tokenizer_digest(source.path), "weights_dtype": dtype_name(dtype)}
    fields = {**source_fields(source, fingerprint), "model": source.label, "origin": origin}
    fields["mode"] = fields.get("mode") or source.kind
    return measure_tasks(config, identity, fields, lambda: (load_model(source, dtype, device), load_tokenizer(source)),
                         registry, progress)


def measure_tasks(config: ZeroShotConfig, identity: dict[str, Any], fields: dict[str, Any],
                  model_of: Callable[[], tuple[nn.Module, Any]], registry: Registry | None = None,
                  progress: Progress | None = None) -> list[dict[str, Any]]:
    """The tasks of `config` on the model `model_of` makes (called only when a task is not in the registry yet):
    `identity` (fingerprint, plan, tokenizer, dtype) keys the rows with the task, few-shot, limit, harness version
    and task data; `fields` (model, source and plan, origin) are recorded with them."""
    version = harness_version()
    manager, digests = task_manager(config.tasks)
    registry = registry or Registry.default()
    base = {"kind": "zeroshot", **identity, "num_fewshot": config.num_fewshot, "limit": config.limit,
            "harness": version}
    keys = {t: run_key(**base, task=t, task_digest=digests.get(t, "hub")) for t in config.tasks}
    results = {t: known for t in config.tasks if (known := registry.lookup(keys[t])) is not None}
    todo = [t for t in config.tasks if t not in results]
    if todo:
        model, tokenizer = model_of()
        partial = {t: request_cache(registry, keys[t]) for t in todo}
        measured = _run(model, tokenizer, str(fields.get("model", "")), todo, config, manager, progress, partial)
        row = {**fields, "kind": "zeroshot", "fingerprint": identity["fingerprint"],
               "plan_hash": identity["plan_hash"], "num_fewshot": config.num_fewshot, "limit_n": config.limit,
               "harness": version}
        for task, result in measured.items():
            registry.record(keys[task], {**row, "task": task, "params": result["params"],
                                         **{k: result[k] for k in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr",
                                                                   "examples")}}, result)
            results[task] = result
            remove_request_cache(partial[task])  # answered from the registry now
    return [{**results[t], "cached": t not in todo} for t in config.tasks]


def tokenizer_digest(folder: Path) -> str:
    """sha256 of a model folder's tokenizer files: the prompts are scored through them, so they are part of a
    zero-shot result's identity as the weights are."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            digest.update(name.encode() + b"\0" + read_capped(folder / name, 2**30, "tokenizer file"))
    return digest.hexdigest()[:16]


def _run(model: nn.Module, tokenizer: Any, label: str, tasks: list[str], config: ZeroShotConfig, manager: Any,
         progress: Progress | None, partial: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The harness on a loaded model: its HFLM around our module and tokenizer, its simple_evaluate, each task's
    answers kept as they come in `partial[task]` (the harness's request cache)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from ..models import count_parameters

    device = next(model.parameters()).device
    prefix = None if tokenizer.bos_token_id is not None or tokenizer.eos_token_id is not None else tokenizer.unk_token_id
    with quiet():
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=config.batch_size, device=str(device),
                  prefix_token_id=prefix)
    params = count_parameters(model)
    measured = {}
    for i, task in enumerate(tasks):  # one task at a time: the progress bar moves task by task
        if progress:
            progress(i, len(tasks), f"harness: {task}")
        try:
            with quiet(), reporting_batches(model, progress, i, len(tasks), task):
                out = simple_evaluate(model=lm, tasks=[task], num_fewshot=config.num_fewshot, limit=config.limit,
                                      task_manager=manager, log_samples=False, use_cache=str(partial[task]))
        except (OSError, ConnectionError, ValueError, RuntimeError) as err:  # hub data unreachable, a damaged file
            local = f" (local file looked for: {data_dir() / LOCAL[task][1]})" if task in LOCAL else ""
            raise WeLoreError(f"task {task}: the harness could not load its data ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}){local}") from None
        finally:  # the request cache flushed and closed, also when cancelled: what was answered is on disk
            close_request_cache(lm)
        row = out["results"][task]
        value = {name: row.get(f"{name},none") for name in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr")}
        value = {k: (float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else None)
                 for k, v in value.items()}
        if value["acc"] is None:
            raise WeLoreError(f"task {task}: the harness reported no finite accuracy ({row})")
        measured[task] = {"task": task, **value, "examples": int(out["n-samples"][task]["effective"]),
                          "num_fewshot": config.num_fewshot, "limit": config.limit, "params": params,
                          "model": label}
    if progress:
        progress(len(tasks), len(tasks), "harness: done")
    return measured
