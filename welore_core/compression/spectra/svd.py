"""Singular values of many matrices, fast, to a stated accuracy: within 1e-5 * s_max of a float64 SVD.

Two methods, chosen per device by `auto`:
  svdvals — LAPACK / cuSOLVER singular values of the tall orientation (no U, V), in float32 or float64;
            float32 is within ~1e-6 * s_max (backward stable: error ~ eps32 * s_max * small factor).
  gram    — eigenvalues of the smaller Gram matrix WᵀW in float64: s_i = sqrt(λ_i). Squaring costs relative
            accuracy only in the smallest values, and |Δs| <= sqrt(|Δλ|) ~ sqrt(n eps64) * s_max ≈ 1e-7 * s_max.
`auto` is gram everywhere: more accurate than float32 svdvals, and faster — on a GPU batched over same-size
Gram matrices (cuSOLVER's SVD is slow; one batched eigvalsh of 8 Gram matrices is not), on a CPU on a pool of
single-threaded workers (one per core: small matrices do not keep several LAPACK threads busy, several
matrices at once do; 2x on two cores). bench/bench_spectra.py and bench/bench_gpu.py measure both.
Whatever the stored dtype (bfloat16 included), each matrix is upcast on its own, never the whole model.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from queue import Empty, Queue
from typing import Hashable, Iterable, Iterator, TypeVar

import numpy as np
import torch

from ...errors import WeLoreError

METHODS = ("auto", "svdvals", "gram")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
PREFETCH = 2  # matrices read ahead of the device (each up to a layer's bytes in host memory)


def resolve_method(method: str, device: torch.device) -> str:
    """The concrete method `auto` stands for (on any `device`: see the module docstring)."""
    if method not in METHODS:
        raise WeLoreError(f"spectra method must be one of {', '.join(METHODS)}, got {method!r}")
    return "gram" if method == "auto" else method


def _tall(w: torch.Tensor) -> torch.Tensor:
    return w.T if w.shape[-2] < w.shape[-1] else w  # LAPACK is faster on tall matrices; the values are the same


def values_of(weight: torch.Tensor, dtype: str, method: str, device: torch.device) -> np.ndarray:
    """Descending singular values of one matrix, as numpy in `dtype`."""
    if method == "gram":
        return _gram_batch([_gram(weight, device)], dtype)[0]
    s = torch.linalg.svdvals(_tall(weight.detach().to(device=device)).to(DTYPES[dtype]))
    return s.to(DTYPES[dtype]).cpu().numpy()


def _gram(weight: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The smaller Gram matrix WᵀW (n, n) of one matrix, in float64 on `device` (the matrix is upcast there)."""
    w = _tall(weight.detach().to(device=device)).double()
    return w.T @ w


def _gram_batch(grams: list[torch.Tensor], dtype: str) -> list[np.ndarray]:
    """Descending singular values from same-size Gram matrices: one batched eigvalsh, ascending -> descending."""
    s = torch.linalg.eigvalsh(torch.stack(grams)).clamp_min(0).sqrt().flip(-1)  # (B, n)
    return list(s.to(DTYPES[dtype]).cpu().numpy())


def stream_values(items: Iterable[tuple[K, torch.Tensor]], dtype: str, method: str, device: torch.device,
                  workers: int = 0, batch: int = 8) -> Iterator[tuple[K, np.ndarray]]:
    """(key, singular values) for every (key, matrix) of `items`, in completion order.

    Reading the next matrix overlaps with computing the last ones: at most 2 x workers matrices (CPU) or
    PREFETCH read-ahead matrices (GPU) are held in host memory at a time. On a GPU each matrix is moved to the
    device and turned into its float64 Gram matrix as it arrives, so the device holds one matrix and at most
    one batch of Gram matrices per size, whatever the matrix's other side. A failing SVD raises WeLoreError
    naming its key.
    """
    method = resolve_method(method, device)
    if device.type == "cuda" and method == "gram":
        yield from _batched(prefetch(items, PREFETCH), dtype, device, batch)
        return
    workers = workers or torch.get_num_threads()
    if workers <= 1:
        for key, weight in items:
            yield key, _guarded(key, weight, dtype, method, device)
        return
    before = torch.get_num_threads()
    try:  # one LAPACK thread per worker, set in each worker's own thread: the workers are the parallelism
        with ThreadPoolExecutor(workers, thread_name_prefix="welore-svd",
                                initializer=torch.set_num_threads, initargs=(1,)) as pool:
            pending: list[Future[tuple[K, np.ndarray]]] = []
            for key, weight in items:
                pending.append(pool.submit(lambda k, w: (k, _guarded(k, w, dtype, method, device)), key, weight))
                while len(pending) >= 2 * workers:
                    yield pending.pop(0).result()
            for future in pending:
                yield future.result()
    finally:
        torch.set_num_threads(before)  # the default a thread started later inherits: back to the caller's


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """The items of `items`, read by a background thread up to `depth` ahead (safetensors reads overlap the
    device's work); an error while reading is raised here, in order."""
    queue: Queue[tuple[bool, object]] = Queue(maxsize=depth)
    stop = threading.Event()

    def read() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                queue.put((True, item))
            queue.put((False, None))
        except BaseException as err:  # handed to the consumer, which raises it
            queue.put((False, err))

    thread = threading.Thread(target=read, name="welore-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            more, item = queue.get()
            if not more:
                if isinstance(item, BaseException):
                    raise item
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                queue.get_nowait()
            except Empty:
                thread.join(0.01)


def _guarded(key: object, weight: torch.Tensor, dtype: str, method: str, device: torch.device) -> np.ndarray:
    try:
        return values_of(weight, dtype, method, device)
    except torch.linalg.LinAlgError as err:
        hint = "try --method svdvals" if method == "gram" else "try --dtype float64"
        raise WeLoreError(f"layer {key}: SVD did not converge ({err}); {hint}") from None


def _batched(items: Iterable[tuple[K, torch.Tensor]], dtype: str, device: torch.device,
             batch: int) -> Iterator[tuple[K, np.ndarray]]:
    buckets: dict[int, list[tuple[K, torch.Tensor]]] = defaultdict(list)  # Gram size -> (key, Gram) on the device
    for key, weight in items:
        gram = _gram(weight, device)
        del weight  # the host copy goes as soon as the device has it
        bucket = buckets[gram.shape[0]]
        bucket.append((key, gram))
        if len(bucket) == batch:
            yield from _flush(bucket, dtype)
    for bucket in buckets.values():
        if bucket:
            yield from _flush(bucket, dtype)


def _flush(bucket: list[tuple[K, torch.Tensor]], dtype: str) -> Iterator[tuple[K, np.ndarray]]:
    keys = [k for k, _ in bucket]
    try:
        values = _gram_batch([g for _, g in bucket], dtype)
    except torch.linalg.LinAlgError as err:
        raise WeLoreError(f"layers {keys[0]}..: eigvalsh did not converge ({err}); try --method svdvals") from None
    bucket.clear()
    yield from zip(keys, values)
