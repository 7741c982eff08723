"""SN-PatchGAN: the spectrally normalised patch discriminator of DeepFillv2."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class SNPatchGAN(nn.Module):
    """SN-PatchGAN discriminator (Yu et al., "Free-Form Image Inpainting with Gated Convolution", ICCV 2019).

    Six 5x5 stride-2 convolutions with spectral normalisation (one power iteration per step) and leaky ReLU; every
    cell of the output map is a real/fake score for one large patch of the input. At the default widths it has
    about 5.95M parameters.

    `forward(image, mask)` takes `image` (B, 3, H, W) in [-1, 1] and `mask` (B, 1, H, W), 1 = hole, and returns
    the score map (B, 4 * width, H / 64, W / 64).
    """

    def __init__(
        self,
        width: int = 64,  # channels of the first convolution; the rest are 2x and 4x this
        in_channels: int = 4,  # RGB + mask
        num_layers: int = 6,  # each halves the resolution
    ):
        super().__init__()
        widths = [width, 2 * width] + [4 * width] * (num_layers - 2)
        layers = []
        for out_channels in widths:
            layers.append(spectral_norm(nn.Conv2d(in_channels, out_channels, 5, stride=2, padding=2)))
            in_channels = out_channels
        self.layers = nn.ModuleList(layers)

    def forward(
        self, image: torch.Tensor, mask: torch.Tensor, features: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        """The score map; with `features`, every layer's output, the score map last (for feature matching)."""
        x, outputs = torch.cat([image, mask.to(image.dtype)], dim=1), []  # (B, 4, H, W)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            outputs.append(x)
        return outputs if features else x
