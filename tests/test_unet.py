"""The U-Net architecture: presets, parameter count, FLOPs, configuration errors."""

from __future__ import annotations

import pytest
import torch

from lptem_dask.errors import ConfigError
from lptem_dask.segment.unet import PRESETS, UNetConfig, build_unet, count_flops, count_parameters


def test_paper_preset_has_the_published_parameter_count():
    assert count_parameters(build_unet("paper")) == 31_031_685


def test_paper_preset_topology():
    cfg = PRESETS["paper"]
    assert (cfg.depth, cfg.base_width, cfg.norm, cfg.dropout, cfg.head_width) == (
        4,
        64,
        "none",
        0.5,
        2,
    )
    net = build_unet("paper")
    drops = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.5, 0.5]  # after the 512 and the 1024 blocks only
    widths = [b[0].out_channels for b in net.down]
    assert widths == [64, 128, 256, 512, 1024]


def test_fast_preset_costs_at_most_a_tenth_of_the_paper_flops():
    # FLOPs of these fully convolutional networks scale with the pixel count, so
    # the ratio at 128 px equals the ratio at 512 px
    paper = count_flops(build_unet("paper"), 128)
    fast = count_flops(build_unet("fast"), 128)
    assert fast / paper <= 0.1
    assert fast / paper > 0.03  # sanity: it is the measured preset, not an empty network
    assert count_flops(build_unet("fast"), 256) == pytest.approx(4 * fast, rel=0.01)


def test_default_alias_and_heads():
    assert PRESETS["default"] == PRESETS["fast"]
    net = build_unet("default").eval()
    assert net.heads == ("probability", "boundary")
    with torch.no_grad():
        out = net(torch.zeros(2, 1, 48, 64))
    assert out.shape == (2, 2, 48, 64)


@pytest.mark.parametrize("norm", ["none", "batch", "group"])
@pytest.mark.parametrize("up_mode", ["upsample_conv2", "transpose"])
def test_configurable_network_runs(norm, up_mode):
    net = build_unet(
        {
            "depth": 2,
            "base_width": 4,
            "norm": norm,
            "up_mode": up_mode,
            "dropout": 0.2,
            "heads": ["probability", "boundary", "distance"],
        }
    ).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 32))
    assert out.shape == (1, 3, 32, 32)
    assert torch.isfinite(out).all()


def test_bad_configs_raise_config_error():
    with pytest.raises(ConfigError, match="unknown U-Net preset"):
        build_unet("huge")
    with pytest.raises(ConfigError, match="depth"):
        build_unet({"depth": 0})
    with pytest.raises(ConfigError, match="bogus"):
        build_unet({"preset": "fast", "bogus": 1})
    with pytest.raises(ValueError, match="probability"):
        UNetConfig(heads=("boundary",))


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_upsampling_layer_equals_the_papers_upsample_pad_conv(fmt):
    """The transposed-convolution form equals nearest x2 + pad + 2x2 convolution,
    in both memory layouts, for inference and for training (gradients)."""
    from lptem_dask.segment.unet import _Up

    torch.manual_seed(0)
    up = _Up(6, 3, "upsample_conv2").to(memory_format=fmt)
    x0 = torch.randn(2, 6, 8, 12).contiguous(memory_format=fmt)
    with torch.inference_mode():
        fast_inf, ref_inf = up(x0), up.reference_forward(x0)
    assert fast_inf.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(fast_inf, ref_inf, atol=1e-5, rtol=1e-5)
    x = x0.clone().requires_grad_(True)
    fast, ref = up(x), up.reference_forward(x)
    assert fast.shape == ref.shape == (2, 3, 16, 24)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    # the same gradients for training, with respect to the input and the weights
    g_fast = torch.autograd.grad(fast.square().sum(), [x, up.conv.weight])
    g_ref = torch.autograd.grad(ref.square().sum(), [x, up.conv.weight])
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_upsampling_kernel_kept_for_inference_follows_weight_changes():
    """The transposed kernel is built once for inference, and rebuilt when the
    weights change in place (load_state_dict) or are replaced (.to())."""
    from lptem_dask.segment.unet import _Up

    torch.manual_seed(2)
    up = _Up(4, 2, "upsample_conv2")
    x = torch.randn(1, 4, 6, 6)
    with torch.inference_mode():
        first = up(x)
        kernel = up._w3_cache[2]
        torch.testing.assert_close(up(x), first)
        assert up._w3_cache[2] is kernel  # reused, not rebuilt
    other = _Up(4, 2, "upsample_conv2")
    up.load_state_dict(other.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(up(x), other.reference_forward(x), atol=1e-5, rtol=1e-5)
    up = up.to(torch.float64)
    with torch.inference_mode():
        out = up(x.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, up.reference_forward(x.double()))
    with torch.enable_grad():  # training never uses (nor fills) the kept kernel
        x_g = x.double().requires_grad_(True)
        up(x_g).sum().backward()
    assert x_g.grad is not None


def test_inference_fast_paths_equal_the_training_forward():
    """Under inference_mode the U-Net computes its 1x1 head as a matrix product; it
    must give the numbers of the plain (autograd) forward, channels-last or not."""
    torch.manual_seed(1)
    net = build_unet({"preset": "fast", "base_width": 4, "depth": 3}).eval()
    for fmt in (torch.channels_last, torch.contiguous_format):
        net = net.to(memory_format=fmt)
        x = torch.randn(2, 1, 48, 40).contiguous(memory_format=fmt)
        with torch.enable_grad():
            ref = net(x)  # parameters require grad: the unfused path
        with torch.inference_mode():
            fast = net(x)
        assert fast.shape == ref.shape == (2, 2, 48, 40)
        torch.testing.assert_close(fast, ref.detach(), atol=1e-6, rtol=1e-5)
