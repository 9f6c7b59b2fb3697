"""A configurable 2-D U-Net (PyTorch) and its presets.

:func:`build_unet` builds the network from a preset name or a
:class:`UNetConfig`. Every network returned here maps a batch of normalised
frames ``(n, 1, y, x)`` float32 to *logits* ``(n, C, y, x)``; the sigmoid is
applied by the loss (training) and by :mod:`lptem_dask.segment.infer`. The
output channels are named by ``UNetConfig.heads``: ``"probability"`` first,
then optionally ``"boundary"`` (pixels on the outline of a particle, used to
separate touching particles) and ``"distance"``.

Presets
-------
``"paper"``
    The network of Yao et al. (2020) (after zhixuhao's Keras U-Net, as in the
    authors' ``chenlabUIUC/U-NetExample``): four encoder levels of two 3x3 ReLU
    convolutions with 64/128/256/512 filters and 2x2 max-pooling, a 1024-filter
    bottleneck, dropout 0.5 after the 512 and 1024 blocks, a decoder of x2
    nearest upsampling, a 2x2 ReLU convolution halving the channels (Keras
    ``padding="same"``: zero pad one row/column after), skip concatenation and
    two 3x3 ReLU convolutions, and a head of a two-channel 3x3 ReLU
    convolution followed by a 1x1 convolution (sigmoid applied outside).
    31,031,685 parameters.
``"fast"`` (alias ``"default"``)
    The default model's network: the same topology with base width 12 (12/24/
    48/96, bottleneck 192; 1.09 M parameters), no dropout, a 1x1 output
    convolution and a second output head for particle boundaries. 1/28 of the
    paper preset's FLOPs per frame. Chosen by measurement among base widths 12,
    16 and 20 (depth 4) and 16 (depth 3): through ``predict_probability`` on
    512-px frames with one torch thread, base 16 ran 8x the paper preset's
    frame rate and base 12 15x (raw forward passes: 11x and 18x), so only base
    12 meets the 10x throughput target with a margin. No normalisation layers:
    on the project's training task batch normalisation made AdamW at 1e-3
    learn several times more slowly.

Group normalisation pools statistics over the whole tile, so a network using
it gives tiled results that differ from whole-frame results; batch
normalisation (evaluation mode) and no normalisation act pixel-wise.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from ..config import StageConfig
from ..errors import ConfigError

__all__ = ["UNetConfig", "UNet", "build_unet", "PRESETS", "count_parameters", "count_flops"]

Head = Literal["probability", "boundary", "distance"]


class UNetConfig(StageConfig):
    """Architecture of a 2-D U-Net.

    Attributes
    ----------
    depth : int
        Number of 2x2 max-pooling steps (the paper: 4). Input sizes must be
        multiples of ``2**depth`` (inference pads to that).
    base_width : int
        Filters of the first level; each level doubles them.
    norm : {"none", "batch", "group"}
        Normalisation after each 3x3 convolution.
    dropout : float
        Dropout probability after the two deepest blocks (the paper: 0.5).
    up_mode : {"upsample_conv2", "transpose"}
        Decoder upsampling: nearest x2 then a 2x2 convolution (the paper) or a
        2x2 transposed convolution.
    head_width : int
        Channels of the 3x3 convolution of the head (the paper: 2); 0 means
        no such layer (a 1x1 output convolution straight from the decoder).
    heads : tuple of str
        Output channels, ``"probability"`` first.
    in_channels : int
        Input channels (1 for grey frames).
    """

    depth: int = Field(default=4, ge=1, le=6)
    base_width: int = Field(default=16, ge=1)
    norm: Literal["none", "batch", "group"] = "batch"
    groups: int = Field(default=8, ge=1, description="groups of GroupNorm")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    up_mode: Literal["upsample_conv2", "transpose"] = "upsample_conv2"
    head_width: int = Field(default=0, ge=0)
    heads: tuple[Head, ...] = ("probability", "boundary")
    in_channels: int = Field(default=1, ge=1)

    @field_validator("heads")
    @classmethod
    def _probability_first(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or v[0] != "probability" or len(set(v)) != len(v):
            raise ValueError(
                f"heads must start with 'probability' and not repeat, got {list(v)}; "
                "e.g. ['probability', 'boundary']"
            )
        return v


PRESETS: dict[str, UNetConfig] = {
    "paper": UNetConfig(
        depth=4,
        base_width=64,
        norm="none",
        dropout=0.5,
        up_mode="upsample_conv2",
        head_width=2,
        heads=("probability",),
    ),
    "fast": UNetConfig(
        depth=4,
        base_width=12,
        norm="none",
        dropout=0.0,
        up_mode="upsample_conv2",
        head_width=0,
        heads=("probability", "boundary"),
    ),
}
PRESETS["default"] = PRESETS["fast"]


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(groups, channels), channels)
    return nn.Identity()


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str, groups: int, dropout: float) -> None:
        bias = norm == "none"
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, 3, padding=1, bias=bias),
            _norm(norm, cout, groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias),
            _norm(norm, cout, groups),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class _Up(nn.Module):
    """x2 upsampling to ``cout`` channels: nearest + 2x2 conv ('same') or transposed conv."""

    def __init__(self, cin: int, cout: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode == "transpose":
            self.conv: nn.Module = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        else:
            self.conv = nn.Conv2d(cin, cout, 2)
        # (weight, (data pointer, version, dtype, device, layout), kernel): see
        # _transposed_weight
        self._w3_cache: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "transpose":
            return F.relu(self.conv(x))
        # The paper's layer is: nearest x2 upsampling, Keras padding="same" for an even
        # kernel (no padding before, one row/column after), 2x2 convolution. Along each
        # axis an even output row 2i reads input row i through both taps (w0 + w1) and
        # an odd row 2i+1 reads row i through w0 and row i+1 (zero past the edge)
        # through w1: a stride-2 transposed convolution with the 3-tap kernel
        # (w1, w0 + w1, w0), padding 1 and output padding 1. Computed that way, with
        # the same weights and the same numbers (to float rounding, tested against
        # the literal form including gradients), it never builds the upsampled and
        # padded tensor, does 9 instead of 16 multiply-adds per input pixel and
        # channel pair, and writes its output in the input's memory layout: on one
        # CPU thread the U-Net's four upsampling layers (with their concatenations)
        # went from 88 to 27 ms per 512x512 frame against the previous form (a 2x2
        # convolution to 4x the channels and a pixel shuffle).
        conv = self.conv
        assert isinstance(conv, nn.Conv2d)
        w3 = self._transposed_weight(
            conv.weight, x.is_contiguous(memory_format=torch.channels_last)
        )
        y = F.conv_transpose2d(x, w3, conv.bias, stride=2, padding=1, output_padding=1)
        return F.relu(y, inplace=True)

    def _transposed_weight(self, w: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """The ``(in, out, 3, 3)`` kernel of the transposed form of the 2x2 weight ``w``.

        Without autograd it is kept until the weight changes (in place, as
        ``load_state_dict`` does, or replaced, as ``.to()`` does): building it
        (einsum + layout copy) cost about 3 ms per frame over the four layers.
        """
        key = (w.data_ptr(), w._version, w.dtype, w.device, channels_last)
        cached = self._w3_cache
        if not torch.is_grad_enabled() and cached is not None and cached[0] is w and cached[1] == key:
            return cached[2]
        taps = _TRANSPOSED_TAPS.to(dtype=w.dtype, device=w.device)
        w3 = torch.einsum("ky,lx,oiyx->iokl", taps, taps, w)
        if channels_last:
            w3 = w3.contiguous(memory_format=torch.channels_last)
        if not torch.is_grad_enabled():
            self._w3_cache = (w, key, w3)
        return w3

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's formulation, literally (upsample, pad, conv); for tests."""
        if self.mode == "transpose":
            return F.relu(self.conv(x))
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = F.pad(x, (0, 1, 0, 1))
        return F.relu(self.conv(x))


# _TRANSPOSED_TAPS[k, d]: weight of tap d of the paper's 2x2 kernel in tap k of the
# equivalent 3-tap stride-2 transposed convolution (see _Up.forward)
_TRANSPOSED_TAPS = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])


class UNet(nn.Module):
    """2-D U-Net returning logits ``(n, len(heads), y, x)``.

    Build it with :func:`build_unet`. The architecture is kept in
    ``self.config`` (a :class:`UNetConfig`), which checkpoints store beside the
    weights.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        widths = [c.base_width * 2**i for i in range(c.depth + 1)]
        self.down = nn.ModuleList()
        cin = c.in_channels
        for i, w in enumerate(widths):
            # dropout after the two deepest blocks (the 512 and 1024 blocks of the paper)
            drop = c.dropout if i >= c.depth - 1 else 0.0
            self.down.append(_DoubleConv(cin, w, c.norm, c.groups, drop))
            cin = w
        self.ups = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for i in range(c.depth - 1, -1, -1):
            self.ups.append(_Up(widths[i + 1], widths[i], c.up_mode))
            self.up_convs.append(_DoubleConv(2 * widths[i], widths[i], c.norm, c.groups, 0.0))
        head: list[nn.Module] = []
        cin = widths[0]
        if c.head_width > 0:
            head += [nn.Conv2d(cin, c.head_width, 3, padding=1), nn.ReLU(inplace=True)]
            cin = c.head_width
        head.append(nn.Conv2d(cin, len(c.heads), 1))
        self.head = nn.Sequential(*head)

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.config.heads)

    @property
    def multiple(self) -> int:
        """Input sizes must be multiples of this (``2**depth``)."""
        return int(2**self.config.depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.config.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, conv in zip(self.ups, self.up_convs, strict=True):
            x = conv(torch.cat([skips.pop(), up(x)], dim=1))
        return self._head(x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        # A 1x1 convolution to a couple of channels takes PyTorch's slow generic
        # path on CPU; on a channels-last input it is a (pixels x c) @ (c x k)
        # matrix product. Inference only; same numbers to float rounding.
        last = self.head[-1]
        if (
            len(self.head) == 1
            and isinstance(last, nn.Conv2d)
            and not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            w = last.weight[:, :, 0, 0]
            y = x.permute(0, 2, 3, 1) @ w.t().to(x.dtype)
            if last.bias is not None:
                y = y + last.bias.to(x.dtype)
            return y.permute(0, 3, 1, 2)
        return self.head(x)


def build_unet(preset_or_config: str | UNetConfig | dict = "fast") -> UNet:
    """Build a U-Net from a preset name, a :class:`UNetConfig` or a mapping.

    Parameters
    ----------
    preset_or_config : str, UNetConfig or dict
        ``"paper"``, ``"fast"`` / ``"default"``, a config, or a mapping of
        :class:`UNetConfig` fields (a mapping may name ``preset`` to start
        from and override some fields).

    Returns
    -------
    UNet
        Randomly initialised, in training mode.

    Examples
    --------
    >>> net = build_unet("paper")
    >>> count_parameters(net)
    31031685
    """
    if isinstance(preset_or_config, UNetConfig):
        return UNet(preset_or_config)
    if isinstance(preset_or_config, str):
        if preset_or_config not in PRESETS:
            raise ConfigError(
                f"unknown U-Net preset {preset_or_config!r}; available: {sorted(PRESETS)}"
            )
        return UNet(PRESETS[preset_or_config])
    if isinstance(preset_or_config, dict):
        data = dict(preset_or_config)
        base = data.pop("preset", None)
        start = PRESETS[base].model_dump() if base in PRESETS else {}
        if base is not None and base not in PRESETS:
            raise ConfigError(f"unknown U-Net preset {base!r}; available: {sorted(PRESETS)}")
        start.update(data)
        from ..config import config_from_mapping

        return UNet(config_from_mapping(UNetConfig, start, source="`preset_or_config`"))
    raise ConfigError(
        f"`preset_or_config` must be a preset name, a UNetConfig or a dict, "
        f"got {type(preset_or_config).__name__}"
    )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_flops(module: nn.Module, size_px: int = 512) -> int:
    """Floating-point operations of one forward pass on one ``size_px``-square frame.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` (a
    multiply-add counts 2).
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    cin = getattr(getattr(module, "config", None), "in_channels", 1)
    x = torch.zeros(1, cin, size_px, size_px)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    module.train(was_training)
    return int(counter.get_total_flops())
