"""Blocks shared by the generators: gated convolutions and contextual attention (DeepFillv1/v2)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"elu": F.elu, "relu": F.relu}


class GatedConv2d(nn.Module):
    """Gated convolution (Yu et al., "Free-Form Image Inpainting with Gated Convolution", ICCV 2019).

    One convolution produces twice the channels; the first half (features, through the activation) is multiplied
    by the sigmoid of the second half (the gate). `out_channels` is the width after gating, so a layer the paper
    writes as "cnum" outputs here has `out_channels = cnum // 2`.
    """

    def __init__(
        self,
        in_channels: int,  # channels of the input
        out_channels: int,  # channels after gating (the convolution itself has twice as many)
        kernel_size: int = 3,  # square kernel, odd
        stride: int = 1,  # 2 halves the resolution
        dilation: int = 1,  # atrous rate of the dilated stages
        activation: str = "elu",  # key of ACTIVATIONS, applied to the feature half
    ):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(in_channels, 2 * out_channels, kernel_size, stride, padding, dilation)
        self.activation = ACTIVATIONS[activation]
        # He initialisation with the feature half scaled by sqrt(2) to make up for the gate (about 0.5 at the
        # start): the signal then keeps roughly its scale through the ~20 gated layers of a stage. PyTorch's
        # default faded it to a constant output (the first thousands of steps crawled); a factor of 2 let it grow
        # tenfold and saturated the output's tanh.
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)
        with torch.no_grad():
            self.conv.weight[:out_channels] *= math.sqrt(2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, gate = self.conv(x).chunk(2, dim=1)
        return self.activation(features) * torch.sigmoid(gate)


class GatedUpConv2d(nn.Module):
    """The paper's "deconv": nearest-neighbour 2x upsampling, then a 3x3 gated convolution."""

    def __init__(
        self,
        in_channels: int,  # channels of the input
        out_channels: int,  # channels after gating
    ):
        super().__init__()
        self.conv = GatedConv2d(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ContextualAttention(nn.Module):
    """Contextual attention (Yu et al., "Generative Image Inpainting with Contextual Attention", CVPR 2018).

    Every foreground position is matched, by the cosine similarity of 3x3 patches computed at 1/`rate` resolution,
    against every background patch that lies entirely in the known region; the scores are "fused" (summed along
    the diagonal with an identity kernel, once in row-major and once in column-major order, as in the authors'
    release) so that coherent neighbourhoods win, turned into weights by a softmax with temperature
    `softmax_scale`, and the output pastes the matching raw background patches (2*rate wide, at full resolution)
    with a transposed convolution. Weights on patches that touch the hole are exactly zero and their scores are
    left out of the fusion (the release fused them in), so the output never depends on what the hole holds.
    The mask is reduced with max-pooling (any hole pixel makes a cell a hole), which is what makes "touches the
    hole" hold for the full-resolution raw patches too. Both sides are normalised (the paper's cosine; the release
    normalised only the background). Computed in float32 even under autocast: the softmax over a few thousand
    patches needs it. It has no learnable parameters.
    """

    def __init__(
        self,
        patch_size: int = 3,  # side of the matched patches at the reduced resolution
        rate: int = 2,  # matching runs at 1/rate resolution; the pasted patches are 2*rate wide; must be even
        fuse_size: int = 3,  # side of the identity kernel that propagates scores; 0 turns fusion off
        softmax_scale: float = 10.0,  # temperature of the softmax over cosine similarities
    ):
        super().__init__()
        if rate < 2 or rate % 2:
            raise ValueError(f"rate must be even and at least 2, got {rate}")
        self.patch_size = patch_size
        self.rate = rate
        self.fuse_size = fuse_size
        self.softmax_scale = softmax_scale

    def forward(self, foreground: torch.Tensor, background: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Return features shaped like `foreground` (B, C, H, W), built from `background`'s known patches.

        `mask` is (B, 1, H, W) at the same resolution, 1 = hole. H and W must be multiples of `rate`.
        """
        height, width = foreground.shape[-2:]
        if height % self.rate or width % self.rate:
            raise ValueError(f"feature size {height}x{width} is not a multiple of rate {self.rate}")
        with torch.autocast(device_type=foreground.device.type, enabled=False):
            out = self._attend(foreground.float(), background.float(), mask.float())
        return out.to(foreground.dtype)

    def _attend(self, foreground: torch.Tensor, background: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = foreground.shape
        rate, pad = self.rate, self.patch_size // 2
        small_fg = foreground[:, :, ::rate, ::rate]  # (B, C, h, w): nearest-neighbour downsampling
        small_bg = background[:, :, ::rate, ::rate]
        small_hole = F.max_pool2d(mask, rate, rate)  # (B, 1, h, w)
        h, w = small_fg.shape[-2:]

        # Cosine similarity of every foreground patch with every background patch: (B, Lf, Lb), L = h * w.
        fg_patches = F.unfold(small_fg, self.patch_size, padding=pad)  # (B, C*k*k, L)
        bg_patches = F.unfold(small_bg, self.patch_size, padding=pad)
        fg_patches = fg_patches / fg_patches.norm(dim=1, keepdim=True).clamp_min(1e-4)
        bg_patches = bg_patches / bg_patches.norm(dim=1, keepdim=True).clamp_min(1e-4)
        scores = torch.bmm(fg_patches.transpose(1, 2), bg_patches)

        # Only background patches with no hole pixel may be borrowed: (B, 1, Lb). Their scores are zeroed before
        # fusion too, so that not even the choice among known patches depends on what the hole holds.
        known = F.unfold(small_hole, self.patch_size, padding=pad).amax(dim=1, keepdim=True) == 0
        scores = scores * known
        if self.fuse_size > 1:
            scores = self._fuse(scores, h, w)
        scores = scores.masked_fill(~known, -1e9)
        weights = torch.softmax(scores * self.softmax_scale, dim=2) * known  # all zero if nothing is known

        # Paste raw patches: a transposed convolution written as matmul + fold; each pixel is covered 4 times.
        size = 2 * rate
        raw = F.unfold(background, size, stride=rate, padding=rate // 2)  # (B, C*size*size, Lb)
        pasted = torch.bmm(raw, weights.transpose(1, 2))  # (B, C*size*size, Lf)
        return F.fold(pasted, (height, width), size, stride=rate, padding=rate // 2) / 4.0

    def _fuse(self, scores: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Sum scores along diagonals: neighbouring foreground positions vote for neighbouring patches."""
        batch = scores.shape[0]
        eye = torch.eye(self.fuse_size, dtype=scores.dtype, device=scores.device).view(1, 1, *([self.fuse_size] * 2))
        pad = self.fuse_size // 2
        # Row-major flattening: the diagonal runs along x.
        scores = F.conv2d(scores.view(batch, 1, h * w, h * w), eye, padding=pad)
        # Column-major flattening: the diagonal runs along y.
        scores = scores.view(batch, h, w, h, w).permute(0, 2, 1, 4, 3).reshape(batch, 1, h * w, h * w)
        scores = F.conv2d(scores, eye, padding=pad)
        return scores.view(batch, w, h, w, h).permute(0, 2, 1, 4, 3).reshape(batch, h * w, h * w)
