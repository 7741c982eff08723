"""DeepFillv2: the two-stage free-form inpainting generator with gated convolutions."""

import torch
import torch.nn.functional as F
from torch import nn

from faceinpaint.models.layers import ContextualAttention, GatedConv2d, GatedUpConv2d


def _dilated_stack(channels: int) -> list[nn.Module]:
    """Four 3x3 gated convolutions with atrous rates 2, 4, 8 and 16: the large receptive field of both stages."""
    return [GatedConv2d(channels, channels, 3, dilation=rate) for rate in (2, 4, 8, 16)]


def _decoder(in_channels: int, base: int) -> nn.Sequential:
    """Two gated convs at 1/4 resolution, two upsamplings back to full size, and a plain conv to RGB."""
    to_rgb = nn.Conv2d(base // 2, 3, 3, padding=1)  # output layer: no gate, tanh applied by the caller
    with torch.no_grad():  # start near grey, off tanh's flat tails (the default left outputs around +-0.8)
        to_rgb.weight.mul_(0.1)
        to_rgb.bias.zero_()
    return nn.Sequential(
        GatedConv2d(in_channels, 4 * base),
        GatedConv2d(4 * base, 4 * base),
        GatedUpConv2d(4 * base, 2 * base),
        GatedConv2d(2 * base, 2 * base),
        GatedUpConv2d(2 * base, base),
        GatedConv2d(base, base // 2),
        to_rgb,
    )


class DeepFillV2(nn.Module):
    """DeepFillv2 generator (Yu et al., "Free-Form Image Inpainting with Gated Convolution", ICCV 2019).

    Coarse stage: an encoder-decoder of gated convolutions with a dilated middle. Refinement stage: the coarse
    result pasted into the hole feeds two encoders, one dilated and one ending in contextual attention, whose
    features are concatenated and decoded. Layer for layer the authors' release; at `width=48` it has 4.05M
    parameters (coarse stage 1.63M).

    `forward(image, mask)` takes `image` (B, 3, H, W) in [-1, 1] and `mask` (B, 1, H, W), 1 = hole, H and W
    multiples of 8, and returns `(coarse, refined)`, both (B, 3, H, W) in [-1, 1] over the whole image (not yet
    composited with the known pixels). Pixels under the hole are ignored.
    """

    def __init__(
        self,
        width: int = 48,  # the paper's cnum: output channels of the first convolution before gating
    ):
        super().__init__()
        if width % 4:
            raise ValueError(f"width must be a multiple of 4, got {width}")
        base = width // 2  # channels after gating at full resolution
        self.coarse = nn.Sequential(
            GatedConv2d(5, base, 5),  # masked RGB + ones + mask
            GatedConv2d(base, 2 * base, 3, stride=2),
            GatedConv2d(2 * base, 2 * base),
            GatedConv2d(2 * base, 4 * base, 3, stride=2),
            GatedConv2d(4 * base, 4 * base),
            GatedConv2d(4 * base, 4 * base),
            *_dilated_stack(4 * base),
            _decoder(4 * base, base),
        )
        self.refine_conv = nn.Sequential(
            GatedConv2d(3, base, 5),
            GatedConv2d(base, base, 3, stride=2),
            GatedConv2d(base, 2 * base),
            GatedConv2d(2 * base, 2 * base, 3, stride=2),
            GatedConv2d(2 * base, 4 * base),
            GatedConv2d(4 * base, 4 * base),
            *_dilated_stack(4 * base),
        )
        self.refine_attention_encoder = nn.Sequential(
            GatedConv2d(3, base, 5),
            GatedConv2d(base, base, 3, stride=2),
            GatedConv2d(base, 2 * base),
            GatedConv2d(2 * base, 4 * base, 3, stride=2),
            GatedConv2d(4 * base, 4 * base),
            GatedConv2d(4 * base, 4 * base, activation="relu"),
        )
        self.attention = ContextualAttention(patch_size=3, rate=2, fuse_size=3, softmax_scale=10.0)
        self.refine_attention_decoder = nn.Sequential(
            GatedConv2d(4 * base, 4 * base),
            GatedConv2d(4 * base, 4 * base),
        )
        self.refine_decoder = _decoder(8 * base, base)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coarse, pasted, mask = self.coarse_stage(image, mask)
        features = self.refinement_features(pasted, mask)
        return coarse, torch.tanh(self.refine_decoder(features))

    def coarse_stage(
        self, image: torch.Tensor, mask: torch.Tensor, prior: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """(coarse output, coarse pasted into the hole's known surroundings, mask in the image's dtype)."""
        mask = mask.to(image.dtype)
        known = image * (1.0 - mask)
        ones = torch.ones_like(mask)
        coarse = torch.tanh(self.encode("coarse", torch.cat([known, ones, mask], dim=1), prior))  # (B, 5, H, W) in
        return coarse, coarse * mask + known, mask

    def refinement_features(
        self, pasted: torch.Tensor, mask: torch.Tensor, prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The two refinement branches, concatenated: (B, 8*base, H/4, W/4), the input of `refine_decoder`."""
        dilated = self.encode("refine_conv", pasted, prior)  # (B, 4*base, H/4, W/4)
        features = self.encode("refine_attention_encoder", pasted, prior)
        small_mask = F.max_pool2d(mask, 4)  # a cell is a hole if any of its pixels is
        features = self.refine_attention_decoder(self.attention(features, features, small_mask))
        return torch.cat([dilated, features], dim=1)

    def encode(self, stage: str, x: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        """Run the stage `stage` (coarse, refine_conv, refine_attention_encoder) on its input. DeepFillv2 takes no
        prior; Two-Face v2 adds its reference prior to each stage's first layer."""
        return getattr(self, stage)(x)
