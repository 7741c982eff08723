"""Two-Face: DeepFillv2 guided by a reference photo of the same person (cross-attention + identity FiLM)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from faceinpaint.models.deepfill import DeepFillV2
from faceinpaint.models.layers import GatedConv2d, gated_activation

PRIOR_CHANNELS = (
    4  # faces/reference_prior.py: the warped reference (RGB, zero where it has no pixels) and its validity
)


def coordinate_features(height: int, width: int, frequencies: int, like: torch.Tensor) -> torch.Tensor:
    """Sines and cosines of the normalised (x, y) position at `frequencies` octaves: (1, 4 * frequencies, H, W).

    Faces are aligned, so "the same place in the other photo" is a strong prior for where an eye or a brow comes
    from; these channels let the attention use it at any resolution.
    """
    ys = torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype).view(1, height, 1)
    xs = torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype).view(1, 1, width)
    scales = (math.pi * 2.0 ** torch.arange(frequencies, device=like.device, dtype=like.dtype)).view(-1, 1, 1)
    ys, xs = (ys * scales).expand(-1, -1, width), (xs * scales).expand(-1, height, -1)  # (F, H, W) each
    return torch.cat([ys.sin(), ys.cos(), xs.sin(), xs.cos()])[None]


# Attention scores one inference slice may hold (batch x heads x queries x keys): 2^26 floats, 256 MiB in float32.
# A 256 px batch of 16 would otherwise hold 16 x 4 x 4096 x 4096 (4 GiB) at once, and more in the kernel's copies.
ATTENTION_ELEMENTS = 1 << 26


class ReferenceAttention(nn.Module):
    """Multi-head cross-attention (Vaswani et al., NeurIPS 2017) from inpainting features to reference features.

    Queries come from the refinement features of the image, keys and values from the reference encoder; both
    sides see `coordinate_features`. The output projection starts at zero, so a fresh model ignores the
    reference and learns how much to borrow.
    """

    def __init__(
        self,
        channels: int,  # channels of the features that ask (and of the output)
        reference_channels: int,  # channels of the reference features that answer
        heads: int = 4,  # attention heads; must divide `channels`
        frequencies: int = 4,  # octaves of the position encoding added to queries and keys
    ):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels cannot be split into {heads} heads")
        self.heads, self.frequencies = heads, frequencies
        position = 4 * frequencies
        self.query = nn.Conv2d(channels + position, channels, 1)
        self.key = nn.Conv2d(reference_channels + position, channels, 1)
        self.value = nn.Conv2d(reference_channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        # (B, heads, HW, C/heads), contiguous: CPU attention takes its fused (flash) kernel only when the last
        # dimension is dense; the transposed view fell back to the math path, which holds the whole score map
        # (Two-Face inference 1.7x slower in all: docs/benchmarks.md, "CPU inference").
        return x.view(batch, self.heads, channels // self.heads, -1).transpose(2, 3).contiguous()

    def forward(self, features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) features attend to (B, Cr, h', w') reference features; returns (B, C, h, w)."""
        batch, channels, height, width = features.shape
        where = coordinate_features(height, width, self.frequencies, features).expand(batch, -1, -1, -1)
        where_ref = coordinate_features(*reference.shape[-2:], self.frequencies, reference)
        query = self._tokens(self.query(torch.cat([features, where], dim=1)))
        key = self._tokens(self.key(torch.cat([reference, where_ref.expand(batch, -1, -1, -1)], dim=1)))
        value = self._tokens(self.value(reference))
        if torch.is_grad_enabled():
            attended = F.scaled_dot_product_attention(query, key, value)  # (B, heads, hw, C/heads)
        else:  # inference: queries in slices, so a batch never holds a whole (hw x h'w') map per head at once
            rows = max(1, ATTENTION_ELEMENTS // (query.shape[0] * query.shape[1] * key.shape[2]))
            slices = [query[:, :, start : start + rows] for start in range(0, query.shape[2], rows)]
            attended = torch.cat([F.scaled_dot_product_attention(part, key, value) for part in slices], dim=2)
        return self.out(attended.transpose(2, 3).reshape(batch, channels, height, width))


class TwoFace(DeepFillV2):
    """Reference-guided face inpainting: DeepFillv2 (Yu et al., ICCV 2019) plus a reference branch.

    The task of the Two-Face seed (a reference photo of the same person helps to fill the hole), on DeepFillv2's
    free-form two-stage generator: its coarse stage and both refinement branches are inherited unchanged (same
    parameter names). A reference encoder turns the reference photo into features at 1/4 resolution; the
    refinement features of the hole borrow from them by cross-attention (details such as the eyes), and a small
    learned identity encoder pools them into an embedding that modulates the refinement features (FiLM: Perez
    et al., AAAI 2018) before the shared decoder. The identity *loss* (dlib's network) is outside the model.

    v2 (`prior=True`) also takes the reference *warped onto the masked face* by landmarks (faces/reference_prior.py:
    the warped RGB, zero where the warp has no pixels, and its validity), through a zero-initialised convolution
    added to the first layer of each of the three encoders: the model no longer has to discover where in the
    reference a part lies, and a fresh v2 is exactly v1.

    `forward(image, mask, reference=None, has_reference=None, prior=None)`: `image` (B, 3, H, W) in [-1, 1],
    `mask` (B, 1, H, W) with 1 = hole, H and W multiples of 8, `reference` like `image` (any multiple of 4 in
    size) or None; `prior` (B, 4, H, W), needed by v2 with a reference, ignored without one. Without a reference
    the model is plain inpainting. `has_reference` (B,) bool marks the samples whose reference is real: for the
    others the output is exactly the no-reference output, whatever their reference and prior tensors hold (this
    is how training drops references per sample). Returns `(coarse, refined)`, both (B, 3, H, W) in [-1, 1], not
    composited. Pixels under the hole are ignored.
    """

    # The modules DeepFillv2 does not have (train.reference_lr_scale applies to them).
    REFERENCE_MODULES = ("reference_encoder", "reference_attention", "identity_encoder", "film", "prior_inputs")
    PRIOR_STAGES = ("coarse", "refine_conv", "refine_attention_encoder")  # the encoders that see the prior

    def __init__(
        self,
        width: int = 48,  # the paper's cnum for the inpainting path (DeepFillv2's width)
        reference_width: int = 32,  # the same for the reference encoder
        identity_dim: int = 128,  # size of the learned identity embedding that drives FiLM
        attention_heads: int = 4,  # heads of the cross-attention to the reference
        prior: bool = False,  # v2: the reference warped onto the face (faces/reference_prior.py), 4 more inputs
    ):
        super().__init__(width)
        if reference_width % 4:
            raise ValueError(f"reference_width must be a multiple of 4, got {reference_width}")
        base, reference_base = width // 2, reference_width // 2
        features = 8 * base  # the concatenated refinement branches at 1/4 resolution
        self.reference_encoder = nn.Sequential(
            GatedConv2d(3, reference_base, 5),
            GatedConv2d(reference_base, 2 * reference_base, 3, stride=2),
            GatedConv2d(2 * reference_base, 2 * reference_base),
            GatedConv2d(2 * reference_base, 4 * reference_base, 3, stride=2),
            GatedConv2d(4 * reference_base, 4 * reference_base),
            GatedConv2d(4 * reference_base, 4 * reference_base),
        )
        self.reference_attention = ReferenceAttention(features, 4 * reference_base, attention_heads)
        self.identity_encoder = nn.Sequential(
            GatedConv2d(4 * reference_base, 4 * reference_base, 3, stride=2),
            GatedConv2d(4 * reference_base, 8 * reference_base, 3, stride=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8 * reference_base, identity_dim),
        )
        self.film = nn.Linear(identity_dim, 2 * features)  # per-channel (scale, shift), zero at the start
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        # v2: a 5x5 convolution of the prior per encoder, added to the input convolution of its first layer. Zero
        # and without bias: a fresh model is v1, and an absent prior (zeros) changes nothing, exactly.
        self.prior_inputs = None
        if prior:
            self.prior_inputs = nn.ModuleDict(
                {stage: nn.Conv2d(PRIOR_CHANNELS, 2 * base, 5, padding=2, bias=False) for stage in self.PRIOR_STAGES}
            )
            for layer in self.prior_inputs.values():
                nn.init.zeros_(layer.weight)

    def identity(self, reference: torch.Tensor) -> torch.Tensor:
        """The learned identity embedding (B, identity_dim), unit length, of reference photos."""
        return F.normalize(self.identity_encoder(self.reference_encoder(reference)).float(), dim=1)

    def encode(self, stage: str, x: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        """DeepFillv2's encoder `stage`, with the prior's convolution added before its first layer's gate (v2)."""
        layers = getattr(self, stage)
        if prior is None or self.prior_inputs is None:
            return layers(x)
        first = layers[0]
        joint = first.conv(x) + self.prior_inputs[stage](prior.to(x.dtype))
        return layers[1:](gated_activation(joint, first.activation_name))

    def forward(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        reference: torch.Tensor | None = None,
        has_reference: torch.Tensor | None = None,
        prior: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if reference is None or self.prior_inputs is None:
            prior = None  # the prior is the reference's: without one (or in a v1 model) there is none
        elif prior is None:
            raise ValueError(
                "this Two-Face model (v2) needs the reference prior with its reference (faces/reference_prior.py)"
            )
        elif has_reference is not None:  # dropped samples see no prior: zeros, which add exactly nothing
            prior = prior * has_reference.to(prior.device, prior.dtype).view(-1, 1, 1, 1)
        coarse, pasted, mask = self.coarse_stage(image, mask, prior)
        features = self.refinement_features(pasted, mask, prior)  # (B, 8*base, H/4, W/4)
        if reference is not None:
            if reference.ndim != 4 or reference.shape[:2] != image.shape[:2]:
                raise ValueError(f"reference {tuple(reference.shape)} does not fit image {tuple(image.shape)}")
            encoded = self.reference_encoder(reference.to(image.dtype))  # (B, 4*reference_base, H/4, W/4)
            # Only the hole borrows: known cells keep their own features, so the reference cannot disturb them.
            borrowed = self.reference_attention(features, encoded) * F.max_pool2d(mask, 4)
            embedding = F.normalize(self.identity_encoder(encoded), dim=1)
            scale, shift = self.film(embedding)[:, :, None, None].chunk(2, dim=1)
            guided = (features + borrowed) * (1.0 + scale) + shift
            if has_reference is not None:  # where, not a product: the dropped samples' gradients vanish too
                guided = torch.where(has_reference.to(features.device).view(-1, 1, 1, 1), guided, features)
            features = guided
        return coarse, torch.tanh(self.refine_decoder(features))
