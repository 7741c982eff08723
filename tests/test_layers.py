"""Gated convolutions and contextual attention, the latter against a naive loop implementation."""

import pytest
import torch
import torch.nn.functional as F

from faceinpaint.models.layers import ContextualAttention, GatedConv2d, GatedUpConv2d


def _patch(x: torch.Tensor, y: int, x0: int, size: int) -> torch.Tensor:
    """The size x size patch of x (C, h, w) centred on (y, x0), zero outside."""
    half = size // 2
    padded = F.pad(x, (half, half, half, half))
    return padded[:, y : y + size, x0 : x0 + size]


def _fuse_flat(scores: torch.Tensor, size: int) -> torch.Tensor:
    """out[p, q] = sum over d in [-size//2, size//2] of scores[p + d, q + d], zero outside."""
    n = scores.shape[0]
    out = torch.zeros_like(scores)
    for p in range(n):
        for q in range(n):
            for d in range(-(size // 2), size // 2 + 1):
                if 0 <= p + d < n and 0 <= q + d < n:
                    out[p, q] += scores[p + d, q + d]
    return out


def naive_contextual_attention(fg, bg, mask, rate=2, patch=3, fuse=3, scale=10.0):
    """One position and one patch at a time, straight from the description in the layer's docstring."""
    batch, channels, height, width = fg.shape
    out = torch.zeros_like(fg)
    for b in range(batch):
        small_fg, small_bg = fg[b, :, ::rate, ::rate], bg[b, :, ::rate, ::rate]
        hole = F.max_pool2d(mask[b : b + 1], rate)[0]
        h, w = small_fg.shape[1:]
        positions = [(y, x) for y in range(h) for x in range(w)]  # row-major
        scores = torch.zeros(h * w, h * w)
        for i, (y, x) in enumerate(positions):
            f = _patch(small_fg, y, x, patch).flatten()
            for j, (yy, xx) in enumerate(positions):
                g = _patch(small_bg, yy, xx, patch).flatten()
                scores[i, j] = f @ g / (max(f.norm(), 1e-4) * max(g.norm(), 1e-4))
        known = torch.tensor([bool((_patch(hole, y, x, patch) == 0).all()) for (y, x) in positions])
        scores[:, ~known] = 0.0
        scores = _fuse_flat(scores, fuse)
        column_major = [x * h + y for (y, x) in positions]  # index of each position in column-major order
        reordered = scores[column_major][:, column_major]  # reordered[c(p), c(q)] = scores[p, q]
        inverse = torch.empty(h * w, dtype=torch.long)
        inverse[torch.tensor(column_major)] = torch.arange(h * w)
        scores = _fuse_flat(reordered, fuse)[inverse][:, inverse]
        for i, (y, x) in enumerate(positions):
            if not known.any():
                continue
            weights = torch.zeros(h * w)
            weights[known] = torch.softmax(scale * scores[i, known], dim=0)
            for j, (yy, xx) in enumerate(positions):
                # Raw 2r x 2r patch around (yy, xx) at full resolution, pasted around (y, x).
                for dy in range(2 * rate):
                    for dx in range(2 * rate):
                        sy, sx = rate * yy - rate // 2 + dy, rate * xx - rate // 2 + dx
                        ty, tx = rate * y - rate // 2 + dy, rate * x - rate // 2 + dx
                        if 0 <= sy < height and 0 <= sx < width and 0 <= ty < height and 0 <= tx < width:
                            out[b, :, ty, tx] += weights[j] * bg[b, :, sy, sx] / 4.0
    return out


@pytest.fixture
def features():
    generator = torch.Generator().manual_seed(3)
    fg = torch.randn(2, 3, 8, 8, generator=generator)
    bg = torch.randn(2, 3, 8, 8, generator=generator)
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 2:5, 3:6] = 1.0
    mask[1, :, 0:3, 0:8] = 1.0
    return fg, bg, mask


@pytest.mark.parametrize("fuse", [3, 5])
def test_contextual_attention_matches_naive_loop(features, fuse):
    fg, bg, mask = features
    expected = naive_contextual_attention(fg, bg, mask, fuse=fuse)
    actual = ContextualAttention(fuse_size=fuse)(fg, bg, mask)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_contextual_attention_gradients_match_naive_loop(features):
    """The score fusion has its own backward (shifted adds, its own adjoint): autograd through the loop agrees."""
    fg, bg, mask = features
    weight = torch.randn(fg.shape, generator=torch.Generator().manual_seed(5))
    grads = []
    for attend in (naive_contextual_attention, ContextualAttention()):
        inputs = [fg.clone().requires_grad_(), bg.clone().requires_grad_()]
        (attend(*inputs, mask) * weight).sum().backward()
        grads.append([x.grad for x in inputs])
    for expected, actual in zip(*grads, strict=True):
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_contextual_attention_never_borrows_from_the_hole(features):
    fg, bg, mask = features
    attention = ContextualAttention()
    before = attention(fg, bg, mask)
    poisoned = bg + 1000.0 * mask  # change every background pixel under the hole
    after = attention(fg, poisoned, mask)
    torch.testing.assert_close(after, before)


def test_contextual_attention_with_nothing_known_gives_zeros():
    fg = torch.randn(1, 4, 8, 8)
    out = ContextualAttention()(fg, fg, torch.ones(1, 1, 8, 8))
    assert torch.count_nonzero(out) == 0


def test_contextual_attention_under_bf16_autocast_keeps_dtype_and_is_finite():
    fg = torch.randn(1, 4, 16, 24)
    mask = torch.zeros(1, 1, 16, 24)
    mask[..., 4:10, 6:14] = 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ContextualAttention()(fg.bfloat16(), fg.bfloat16(), mask)
    assert out.dtype == torch.bfloat16 and out.shape == fg.shape and torch.isfinite(out.float()).all()


def test_contextual_attention_rejects_sizes_that_are_not_multiples_of_the_rate():
    with pytest.raises(ValueError, match="multiple of rate"):
        ContextualAttention()(torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8), torch.zeros(1, 1, 7, 8))


def test_gated_conv_halves_and_gates():
    layer = GatedConv2d(5, 6, kernel_size=3, stride=2)
    assert layer.conv.out_channels == 12
    out = layer(torch.randn(2, 5, 16, 16))
    assert out.shape == (2, 6, 8, 8)
    assert GatedUpConv2d(6, 4)(out).shape == (2, 4, 16, 16)


@pytest.mark.parametrize("activation", ["elu", "relu"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gated_conv_training_gradients_match_plain_ops(activation, layout):
    """With gradients on, the gate is one autograd node with its own backward: same values and gradients."""
    torch.manual_seed(0)
    layer = GatedConv2d(4, 3, kernel_size=3, dilation=2, activation=activation).to(memory_format=layout)
    x = torch.randn(2, 4, 9, 9).contiguous(memory_format=layout).requires_grad_()
    weight = torch.randn(2, 3, 9, 9)
    results = []
    for fused in (True, False):
        x.grad = None
        layer.zero_grad(set_to_none=True)
        if fused:
            out = layer(x)
        else:
            features, gate = layer.conv(x).chunk(2, dim=1)
            out = layer.activation(features) * torch.sigmoid(gate)
        (out * weight).sum().backward()
        results.append([out, x.grad, layer.conv.weight.grad, layer.conv.bias.grad])
    for actual, expected in zip(*results, strict=True):
        torch.testing.assert_close(actual, expected)
    assert results[0][1].is_contiguous(memory_format=layout)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gated_up_conv_equals_upsampling_then_convolving(layout):
    """The sub-pixel form: same values and gradients as nearest 2x upsampling followed by the gated 3x3 conv."""
    torch.manual_seed(0)
    layer = GatedUpConv2d(5, 3).to(memory_format=layout)
    with torch.no_grad():
        layer.conv.conv.bias.normal_()  # zero at init: make the bias's path visible
    x = torch.randn(2, 5, 6, 9).contiguous(memory_format=layout).requires_grad_()
    weight = torch.randn(2, 3, 12, 18)
    results = []
    for module in (layer, lambda x: layer.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))):
        x.grad = None
        layer.zero_grad(set_to_none=True)
        out = module(x)
        (out * weight).sum().backward()
        results.append([out, x.grad, layer.conv.conv.weight.grad, layer.conv.conv.bias.grad])
    for actual, expected in zip(*results, strict=True):
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)
    assert results[0][0].is_contiguous(memory_format=layout)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), results[1][0], atol=1e-5, rtol=1e-4)


def test_gated_conv_backward_passes_gradcheck():
    torch.manual_seed(0)
    layer = GatedConv2d(2, 2, kernel_size=3).double()
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_gated_conv_output_is_activation_times_sigmoid():
    layer = GatedConv2d(2, 1, kernel_size=1)
    x = torch.randn(1, 2, 3, 3)
    features, gate = layer.conv(x).chunk(2, dim=1)
    torch.testing.assert_close(layer(x), F.elu(features) * torch.sigmoid(gate))
