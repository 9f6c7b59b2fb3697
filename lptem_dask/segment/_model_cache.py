"""One model per worker: a serialisable model spec and a per-process cache.

:class:`ModelSpec` carries a model to Dask workers as bytes (architecture +
safetensors weights for this package's U-Nets; the pickled module for a
foreign ``torch.nn.Module``) together with its SHA-256. Inference puts one
spec into the task graph as a single key that every chunk task depends on,
so the distributed scheduler ships it to each worker once; each worker builds
the module once and keeps it in :data:`_CACHE`, keyed by (weights hash,
device).

Threads: on a CPU Dask worker with n threads, torch runs one intra-op thread
and up to n forward passes run at once, one per task thread (inference on a
shared module is thread-safe), so the U-Net of one chunk overlaps the
labelling and measuring of another on the other cores. Measured with
``benchmarks/bench_pipeline_overhead.py`` (1 worker x 2 threads, 512 px): the
pipeline ran at 1.07x the frames/s of a bare serial loop with 2 torch threads,
against 0.88x with one forward at a time on 2 torch threads. Elsewhere (GPU, or
outside a worker, where Dask's threaded scheduler may run several blocks at
once) forward passes on one cached model are serialised by a lock and torch
keeps its own thread count. ``LPTEM_TORCH_THREADS`` overrides the count.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["ModelSpec", "CachedModel", "get_cached_model", "clear_cache", "n_deserialised"]

_CACHE: dict[tuple[str, str], CachedModel] = {}
_CACHE_LOCK = threading.Lock()
_N_DESERIALISED = 0  # how many ModelSpec objects this process unpickled (for tests)
_THREADS_SET = False


def n_deserialised() -> int:
    """Number of :class:`ModelSpec` objects deserialised in this process."""
    return _N_DESERIALISED


def n_cached() -> int:
    return len(_CACHE)


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


class _NoLock:
    """Stands in for the lock where forward passes may run concurrently."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@dataclass
class CachedModel:
    module: nn.Module
    card: dict[str, Any]
    device: torch.device
    lock: Any  # threading.Lock, or _NoLock on CPU workers


class ModelSpec:
    """A model in transit: kind, payload bytes, card and weights hash."""

    def __init__(self, kind: str, payload: bytes, card: dict[str, Any], sha256: str) -> None:
        self.kind = kind  # "unet" (architecture in card + safetensors) or "pickle"
        self.payload = payload
        self.card = card
        self.sha256 = sha256

    @classmethod
    def from_module(cls, module: nn.Module, card: dict[str, Any]) -> ModelSpec:
        import hashlib

        from ._checkpoint import state_to_bytes
        from .unet import UNet

        if isinstance(module, UNet):
            blob = state_to_bytes(module)
            kind = "unet"
            sha = hashlib.sha256(blob).hexdigest()
        else:
            import io

            import cloudpickle

            buf = io.BytesIO()
            buf.write(cloudpickle.dumps(module.to("cpu")))
            blob = buf.getvalue()
            kind = "pickle"
            from ._checkpoint import state_to_bytes as _sb

            sha = hashlib.sha256(_sb(module) + type(module).__qualname__.encode()).hexdigest()
        card = dict(card)
        if kind == "unet":
            import json

            card["architecture"] = json.loads(module.config.model_dump_json())  # type: ignore[union-attr,operator]
        card["weights_sha256"] = sha
        return cls(kind, blob, card, sha)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "payload": self.payload,
            "card": self.card,
            "sha256": self.sha256,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        global _N_DESERIALISED
        _N_DESERIALISED += 1
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"ModelSpec({self.kind}, sha256={self.sha256[:12]}, {len(self.payload)} bytes)"

    def build(self) -> nn.Module:
        if self.kind == "unet":
            from ._checkpoint import module_from_state, state_from_bytes

            module: nn.Module = module_from_state(
                self.card["architecture"], state_from_bytes(self.payload), "a model spec"
            )
        else:
            import pickle

            # the module the user passed in this session, pickled by cloudpickle
            module = pickle.loads(self.payload)
        module.eval()
        return module


def _worker_threads() -> int | None:
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


def _set_threads() -> None:
    global _THREADS_SET
    if _THREADS_SET:
        return
    n = 1 if _worker_threads() is not None else None  # see the module docstring
    env = os.environ.get("LPTEM_TORCH_THREADS")
    if env:
        n = int(env)
    if n is not None and n > 0:
        torch.set_num_threads(n)
    _THREADS_SET = True


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def get_cached_model(spec: ModelSpec, device: str | torch.device | None) -> CachedModel:
    """The module for ``spec`` on ``device``, built once per process."""
    dev = resolve_device(device)
    key = (spec.sha256, str(dev))
    entry = _CACHE.get(key)
    if entry is not None:
        return entry
    with _CACHE_LOCK:
        entry = _CACHE.get(key)
        if entry is None:
            _set_threads()
            module = spec.build().to(dev)
            if dev.type == "cpu":
                module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            parallel = dev.type == "cpu" and _worker_threads() is not None
            lock = _NoLock() if parallel else threading.Lock()
            entry = CachedModel(module, spec.card, dev, lock)
            _CACHE[key] = entry
    return entry
