"""The shipped default model and the model loader.

``lptem_dask/models/default.safetensors`` + ``default.json`` hold the default
U-Net (preset "fast") trained on simulated images. They are produced by
``make model``, i.e. two stages (the second starts from the first's weights)::

    lptem train configs/train/default_stage1.yaml --out lptem_dask/models --name default
    lptem train configs/train/default.yaml --out lptem_dask/models --name default

(Python: ``lptem_dask.segment.train.train_command("configs/train/default.yaml",
out_dir="lptem_dask/models", name="default")``). Weights are loaded with
safetensors only; nothing is ever unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelError

__all__ = ["load_model", "default_model_paths", "DEFAULT_TRAIN_COMMAND"]

_HERE = Path(__file__).resolve().parent

DEFAULT_TRAIN_COMMAND = (
    "`make model`, i.e. lptem train configs/train/default_stage1.yaml --out lptem_dask/models "
    "--name default, then lptem train configs/train/default.yaml --out lptem_dask/models "
    "--name default"
)


def default_model_paths() -> tuple[Path, Path]:
    """Paths of the shipped default weights and card (they may not exist yet)."""
    return _HERE / "default.safetensors", _HERE / "default.json"


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
    model : "default", str or Path, or torch.nn.Module
        ``"default"``: the shipped model. A path: a checkpoint written by
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
        if isinstance(model, str) and model == "default":
            weights, card_path = default_model_paths()
            if not weights.is_file() or not card_path.is_file():
                raise ModelError(
                    f"the default model is not installed ({weights} is missing); train it "
                    f"with: {DEFAULT_TRAIN_COMMAND}  (or pass model=PATH to a checkpoint)"
                )
            model = weights
        if not isinstance(model, (str, Path)):
            raise ModelError(
                f"`model` must be 'default', a checkpoint path or a torch.nn.Module, "
                f"got {type(model).__name__}"
            )
        module, card, sha = read_checkpoint(model)
        card = dict(card)
        card.setdefault("weights_sha256", sha)
        card["source"] = str(model)
    module.eval()
    if device is not None:
        module.to(device)
    return module, card
