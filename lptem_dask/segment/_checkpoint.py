"""Checkpoints: safetensors weights + a JSON model card. Never unpickles.

A checkpoint is two files side by side::

    NAME.safetensors   weights (float32 state dict)
    NAME.json          model card: architecture, heads, normalisation, training
                       particle sizes, training config and its hash, data seeds,
                       metrics, package version, training time, hardware

Weights are read only with :mod:`safetensors` or, for ``.pt``/``.pth`` state
dicts, with ``torch.load(weights_only=True)``, which refuses any pickle that
would construct arbitrary objects or run code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from ..store import atomic_path
from .unet import UNet, UNetConfig

__all__ = [
    "CARD_FORMAT",
    "save_checkpoint",
    "read_checkpoint",
    "resolve_checkpoint_paths",
    "module_from_state",
    "state_to_bytes",
    "state_from_bytes",
]

CARD_FORMAT = "lptem-unet/1"


def state_to_bytes(module: nn.Module) -> bytes:
    """The module's state dict as safetensors bytes (float32, contiguous)."""
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    return save(state)


def state_from_bytes(blob: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(blob)


def sha256_bytes(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def save_checkpoint(
    module: UNet, card: dict[str, Any], path: str | Path, *, overwrite: bool = False
) -> Path:
    """Write ``path`` (``.safetensors``) and its card (``.json``) atomically.

    Returns the path of the weights. The card gets ``format``, ``architecture``
    and ``weights_sha256`` filled in.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    blob = state_to_bytes(module)
    card = dict(card)
    card["format"] = CARD_FORMAT
    card["architecture"] = json.loads(module.config.model_dump_json())
    card["heads"] = list(module.config.heads)
    card["weights_sha256"] = sha256_bytes(blob)
    stages = card.get("training_stages")
    if stages and stages[-1].get("weights_sha256") is None:
        # the record of the stage that made these weights (see train.stage_record)
        stages = [dict(st) for st in stages]
        stages[-1]["weights_sha256"] = card["weights_sha256"]
        card["training_stages"] = stages
    card_path = path.with_suffix(".json")
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(blob)
    with atomic_path(card_path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(card, indent=2, sort_keys=True, default=str))
    return path


def resolve_checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, card) for a checkpoint given as a directory, weights file or card."""
    p = Path(path)
    if p.is_dir():
        cands = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.pt")) + sorted(p.glob("*.pth"))
        preferred = [c for c in cands if c.stem in ("model", "default")]
        if preferred:
            cands = preferred
        if len(cands) != 1:
            raise ModelError(
                f"checkpoint directory {str(p)!r} must hold exactly one weights file "
                f"(NAME.safetensors with NAME.json), found {[c.name for c in cands]}; "
                "pass the weights file itself"
            )
        p = cands[0]
    if p.suffix == ".json":
        cands = [p.with_suffix(s) for s in (".safetensors", ".pt", ".pth")]
        found = [c for c in cands if c.is_file()]
        if not found:
            raise ModelError(f"no weights file beside model card {str(p)!r}; expected {cands[0]}")
        p = found[0]
    if not p.is_file():
        raise ModelError(
            f"model checkpoint {str(p)!r} does not exist; pass model='default', a "
            "checkpoint written by `lptem train`, or a torch.nn.Module"
        )
    card = p.with_suffix(".json")
    if not card.is_file():
        raise ModelError(
            f"model card {str(card)!r} is missing beside weights {str(p)!r}; a checkpoint "
            "is NAME.safetensors + NAME.json as written by `lptem train`"
        )
    return p, card


def _read_weights(path: Path) -> tuple[bytes, dict[str, torch.Tensor]]:
    blob = path.read_bytes()
    if path.suffix == ".safetensors":
        try:
            state = state_from_bytes(blob)
        except Exception as exc:
            raise ModelError(
                f"cannot read weights {str(path)!r} as safetensors ({type(exc).__name__}: "
                f"{exc}); the file is corrupt or not a safetensors file"
            ) from None
        return blob, state
    import io
    import pickle

    try:
        obj = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError) as exc:
        raise ModelError(
            f"refused to load {str(path)!r}: it is not a plain tensor state dict "
            f"(torch.load(weights_only=True) said: {str(exc).splitlines()[0][:200]}); "
            "arbitrary pickles are never loaded; save weights with safetensors"
        ) from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a state dict of tensors; "
            "save `module.state_dict()`"
        )
    return blob, obj


def module_from_state(architecture: dict, state: dict[str, torch.Tensor], source: str) -> UNet:
    """Build a :class:`UNet` from its architecture mapping and load ``state``."""
    try:
        config = UNetConfig.model_validate(architecture)
    except Exception as exc:
        raise ModelError(f"model card of {source} has an invalid `architecture`: {exc}") from None
    module = UNet(config)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"weights of {source} do not fit the architecture in its card: "
            f"{str(exc).splitlines()[0][:300]}"
        ) from None
    return module


def read_checkpoint(path: str | Path) -> tuple[UNet, dict[str, Any], str]:
    """Load a checkpoint; returns (module on CPU in eval mode, card, weights sha256)."""
    wpath, cpath = resolve_checkpoint_paths(path)
    try:
        card = json.loads(cpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"model card {str(cpath)!r} is not valid JSON: {exc}") from None
    if not isinstance(card, dict) or "architecture" not in card:
        raise ModelError(
            f"model card {str(cpath)!r} has no `architecture`; not an lptem checkpoint"
        )
    blob, state = _read_weights(wpath)
    module = module_from_state(card["architecture"], state, repr(str(wpath)))
    module.eval()
    return module, card, sha256_bytes(blob)
