"""Blocks shared by the generators: gated convolutions and contextual attention (DeepFillv1/v2)."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

ACTIVATIONS = {"elu": F.elu, "relu": F.relu}


class _GatedActivation(torch.autograd.Function):
    """activation(features) * sigmoid(gate) of a convolution's output (B, 2C, H, W), as one autograd node.

    The same arithmetic as the three separate ops, but autograd keeps only the two activated halves (not also the
    convolution's output), and the backward writes both halves' gradients straight into one tensor in the
    convolution's memory format, where chunk's backward would allocate a zero tensor per half and concatenate.
    """

    @staticmethod
    def forward(ctx, conv_output: torch.Tensor, activation: str) -> torch.Tensor:
        features, gate = conv_output.chunk(2, dim=1)
        features, gate = ACTIVATIONS[activation](features), torch.sigmoid(gate)
        ctx.save_for_backward(features, gate)
        ctx.activation = activation
        return features * gate

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        features, gate = ctx.saved_tensors
        batch, channels, height, width = features.shape
        grad_input = torch.empty((batch, 2 * channels, height, width), dtype=grad.dtype, device=grad.device,
                                 memory_format=_layout(features))  # fmt: skip
        grad_features, grad_gate = grad_input[:, :channels], grad_input[:, channels:]
        through_gate = grad * gate
        if ctx.activation == "elu":  # from the result: 1 where positive, elu + 1 (= exp) elsewhere
            torch.ops.aten.elu_backward.grad_input(through_gate, 1.0, 1.0, 1.0, True, features,
                                                   grad_input=grad_features)  # fmt: skip
        else:
            torch.ops.aten.threshold_backward.grad_input(through_gate, features, 0.0, grad_input=grad_features)
        torch.ops.aten.sigmoid_backward.grad_input(grad * features, gate, grad_input=grad_gate)
        return grad_input, None


def _layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format of a 4D tensor: channels-last if it is laid out so, else contiguous."""
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def gated_activation(conv_output: torch.Tensor, activation: str) -> torch.Tensor:
    """activation(first half of the channels) * sigmoid(second half): (B, 2C, H, W) -> (B, C, H, W)."""
    if torch.is_grad_enabled() and conv_output.requires_grad:  # training: the leaner autograd node
        return _GatedActivation.apply(conv_output, activation)
    # Inference and export: plain ops, in place on the convolution's fresh output (slices, not chunk: a traced
    # TorchScript module refuses in-place ops on the views of a multi-view op).
    half = conv_output.shape[1] // 2
    features, gate = conv_output[:, :half], conv_output[:, half:]
    if activation == "elu":
        features = F.elu_(features)
    else:
        features = F.relu_(features)
    return features.mul_(gate.sigmoid_())


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
        self.activation_name = activation
        # He initialisation with the feature half scaled by sqrt(2) to make up for the gate (about 0.5 at the
        # start): the signal then keeps roughly its scale through the ~20 gated layers of a stage. PyTorch's
        # default faded it to a constant output (the first thousands of steps crawled); a factor of 2 let it grow
        # tenfold and saturated the output's tanh.
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)
        with torch.no_grad():
            self.conv.weight[:out_channels] *= math.sqrt(2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gated_activation(self.conv(x), self.activation_name)


# Rows (or columns) of a 3x3 kernel that land on the same input row after nearest 2x upsampling, for even and odd
# output rows: an even row 2i sees input rows i-1 (tap 0) and i (taps 1, 2); an odd row 2i+1 sees i (taps 0, 1) and
# i+1 (tap 2). (phase, 2 taps of the folded kernel, 3 taps of the original)
_UPSAMPLE_FOLD = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


class GatedUpConv2d(nn.Module):
    """The paper's "deconv": nearest-neighbour 2x upsampling, then a 3x3 gated convolution.

    Computed without the upsampling (what "sub-pixel" convolution does): each of the four output phases (even /
    odd row and column) sees only a 2x2 window of the input, through the 3x3 kernel's taps summed where they fall on
    the same input pixel, so one 2x2 convolution at the input's resolution with four kernels per output channel
    gives all phases; they are gated, then interleaved. The same result as upsampling then convolving (up to float
    rounding) with 4/9 of the multiply-adds; the zero padding of the upsampled image is the zero padding of the
    input. The parameters are the 3x3 convolution's (`conv.conv`), as before.
    """

    def __init__(
        self,
        in_channels: int,  # channels of the input
        out_channels: int,  # channels after gating
    ):
        super().__init__()
        self.conv = GatedConv2d(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, (height, width) = self.conv.conv, x.shape[-2:]
        fold = _UPSAMPLE_FOLD.to(conv.weight)
        # (row phase, column phase, 2C, in, 2, 2) -> output channels ordered (feature/gate half, phase, C), so that
        # one gate call serves all four phases.
        kernels = torch.einsum("pak,qbl,oikl->pqoiab", fold, fold, conv.weight)
        kernels = kernels.unflatten(2, (2, -1)).permute(2, 0, 1, 3, 4, 5, 6).flatten(0, 3)  # (8C, in, 2, 2)
        bias = conv.bias.view(2, 1, -1).expand(2, 4, -1).flatten()
        # Output (i, j) of this convolution of the padded input covers input rows i-1, i and columns j-1, j.
        phases = gated_activation(F.conv2d(F.pad(x, (1, 1, 1, 1)), kernels, bias), self.conv.activation_name)
        channels = phases.shape[1] // 4  # (B, 4C, H+1, W+1), phase-major
        # Even output rows take window i (input rows i-1, i), odd ones window i + 1 (rows i, i+1); columns alike.
        parts = [
            phases[:, index * channels : (index + 1) * channels, row : row + height, column : column + width]
            for index, (row, column) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1)))
        ]
        # (B, C * 4, H, W) with channel c's phases (row, column) at 4c + 2 * row + column: what pixel_shuffle
        # interleaves (one DepthToSpace in ONNX, where the 6D permute was a slow Transpose).
        out = F.pixel_shuffle(torch.stack(parts, dim=2).flatten(1, 2), 2)
        return out.contiguous(memory_format=_layout(x))


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
        # Row-major flattening: the diagonal runs along x.
        scores = _diagonal_sums(scores, self.fuse_size)
        # Column-major flattening: the diagonal runs along y.
        scores = scores.view(batch, h, w, h, w).permute(0, 2, 1, 4, 3).reshape(batch, h * w, h * w)
        scores = _diagonal_sums(scores, self.fuse_size)
        return scores.view(batch, w, h, w, h).permute(0, 2, 1, 4, 3).reshape(batch, h * w, h * w)


def _diagonal_sum(scores: torch.Tensor, size: int) -> torch.Tensor:
    """out[b, p, q] = sum over |d| <= size // 2 of scores[b, p + d, q + d] (zero outside): a 2D convolution of the
    (L, L) score image with a size x size identity kernel, as shifted adds (a one-channel convolution over an
    (h*w)^2 image is slow, and more so its backward). Out of place with zero padding, not slice assignment: the
    same values, and an ONNX graph of Pad and Add instead of ScatterND over index tensors and their Transposes
    (which made onnxruntime slower than PyTorch: docs/benchmarks.md, "CPU inference")."""
    out = scores
    for shift in range(1, size // 2 + 1):
        out = out + F.pad(scores[:, shift:, shift:], (0, shift, 0, shift))
        out = out + F.pad(scores[:, :-shift, :-shift], (shift, 0, shift, 0))
    return out


def _diagonal_sums(scores: torch.Tensor, size: int) -> torch.Tensor:
    if torch.is_grad_enabled() and scores.requires_grad:  # training: the node with the cheap backward
        return _DiagonalSum.apply(scores, size)
    return _diagonal_sum(scores, size)  # inference and export (TorchScript traces no autograd.Function)


class _DiagonalSum(torch.autograd.Function):
    """`_diagonal_sum` with its own backward: the kernel is symmetric, so the operator is its own adjoint."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, size: int) -> torch.Tensor:
        ctx.size = size
        return _diagonal_sum(scores, size)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _DiagonalSum.apply(grad, ctx.size), None
