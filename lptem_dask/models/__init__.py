"""The shipped models and the model loader.

``lptem_dask/models/default.safetensors`` + ``default.json`` hold the default
U-Net (preset "fast") trained on simulated images. They are produced by
``make model``, i.e. two stages (the second starts from the first's weights)::

    lptem train configs/train/default_stage1.yaml --out lptem_dask/models --name default
    lptem train configs/train/default.yaml --out lptem_dask/models --name default

``rods.safetensors`` + ``rods.json`` (``model="rods"``) are the default model trained
further with images of the ``rods`` preset (strong motion blur of the seed's rod
runs), ``make model``'s third step::

    lptem train configs/train/rods.yaml --out lptem_dask/models --name rods

(Python: ``lptem_dask.segment.train.train_command("configs/train/default.yaml",
out_dir="lptem_dask/models", name="default")``). Weights are loaded with
safetensors only; nothing is ever unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelError

__all__ = [
    "load_model",
    "default_model_paths",
    "shipped_model_paths",
    "SHIPPED_MODELS",
    "DEFAULT_TRAIN_COMMAND",
]

_HERE = Path(__file__).resolve().parent

DEFAULT_TRAIN_COMMAND = (
    "`make model`, i.e. lptem train configs/train/default_stage1.yaml --out lptem_dask/models "
    "--name default, then lptem train configs/train/default.yaml --out lptem_dask/models "
    "--name default"
)


#: Models shipped inside the package, by the name ``model=`` takes, and how each is made.
SHIPPED_MODELS: dict[str, str] = {
    "default": DEFAULT_TRAIN_COMMAND,
    "rods": "lptem train configs/train/rods.yaml --out lptem_dask/models --name rods "
    "(after the default model; `make model` runs all three steps)",
}


def shipped_model_paths(name: str = "default") -> tuple[Path, Path]:
    """Paths of a shipped model's weights and card (they may not exist yet).

    Parameters
    ----------
    name : str
        A key of :data:`SHIPPED_MODELS` (``"default"``, ``"rods"``).
    """
    if name not in SHIPPED_MODELS:
        raise ModelError(f"no shipped model {name!r}; the package ships {sorted(SHIPPED_MODELS)}")
    return _HERE / f"{name}.safetensors", _HERE / f"{name}.json"


def default_model_paths() -> tuple[Path, Path]:
    """Paths of the shipped default weights and card (they may not exist yet)."""
    return shipped_model_paths("default")


def _default_card_for(module: Any) -> dict[str, Any]:
    cfg = getattr(module, "config", None)
    heads = list(getattr(cfg, "heads", ("probability",)))
    card: dict[str, Any] = {"heads": heads, "particle_size_px": None}
    if cfg is not None and hasattr(cfg, "model_dump_json"):
        import json

        card["architecture"] = json.loads(cfg.model_dump_json())
    return card


def load_model(model: Any = "default", *, device: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Load a U-Net and its model card.

    Parameters
    ----------
    model : "default", "rods", str or Path, or torch.nn.Module
        ``"default"``: the shipped default model; ``"rods"``: the shipped model for
        rods blurred by their motion (see :data:`SHIPPED_MODELS`). A path: a checkpoint written by
        ``lptem train`` (``NAME.safetensors`` + ``NAME.json``, or their
        directory; a ``.pt``/``.pth`` state dict is read with
        ``torch.load(weights_only=True)``). A module is returned as is; its
        card is ``module.lptem_card`` if set, else one derived from its config.
    device : str, optional
        Torch device to move the module to (default: leave on CPU).

    Returns
    -------
    (torch.nn.Module, dict)
        The module in eval mode and its model card.

    Raises
    ------
    ModelError
        If the checkpoint is missing, corrupt, refused (arbitrary pickle) or
        does not fit its card.
    """
    from torch import nn

    from ..segment._checkpoint import read_checkpoint

    if isinstance(model, nn.Module):
        card = getattr(model, "lptem_card", None) or _default_card_for(model)
        module = model
    else:
        if isinstance(model, str) and model in SHIPPED_MODELS:
            weights, card_path = shipped_model_paths(model)
            if not weights.is_file() or not card_path.is_file():
                raise ModelError(
                    f"the shipped model {model!r} is not installed ({weights} is missing); "
                    f"train it with: {SHIPPED_MODELS[model]}  (or pass model=PATH to a "
                    "checkpoint)"
                )
            model = weights
        if not isinstance(model, (str, Path)):
            raise ModelError(
                f"`model` must be one of {sorted(SHIPPED_MODELS)}, a checkpoint path or a "
                f"torch.nn.Module, got {type(model).__name__}"
            )
        module, card, sha = read_checkpoint(model)
        card = dict(card)
        card.setdefault("weights_sha256", sha)
        card["source"] = str(model)
    module.eval()
    if device is not None:
        module.to(device)
    return module, card
