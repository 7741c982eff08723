"""ST-LPIPS (shift-tolerant LPIPS, Ghildyal & Liu 2022) with the AlexNet weights shipped in `stlpips-pytorch`.

The package's own modules import torchvision, IPython and torchsummary, so only its weights file is read here;
the network below lays out its layers so that file loads with strict key checking.
"""

import torch
import torch.nn.functional as F
from torch import nn

from faceinpaint.package_data import package_file

STLPIPS_INSTALL = "pip install stlpips-pytorch --no-deps (or pip install 'faceinpaint[eval]')"
STLPIPS_WEIGHTS = "weights/vST0.0/alex_shift_tolerant.pth"
CHANNELS = (64, 192, 384, 256, 256)  # AlexNet relu1..relu5


def unit_length(features: torch.Tensor) -> torch.Tensor:
    """Feature maps (B, C, h, w) scaled to unit length along channels at every position, as LPIPS compares them."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)


class BlurDownsample(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect-pad by 2, then a fixed 3x3 binomial blur per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("filt", torch.zeros(channels, 1, 3, 3))  # loaded: [1, 2, 1] x [1, 2, 1] / 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class ShiftTolerantAlexNet(nn.Module):
    """AlexNet's five conv stages with a stride-1 first conv, blur-pooling and stride-1 max pools.

    Module indices follow the weights file's keys (`slice2.5` is the 5th layer of the flat feature stack).
    """

    def __init__(self):
        super().__init__()
        relu = nn.ReLU
        self.slice1 = nn.Sequential()
        self.slice1.add_module("0", nn.Conv2d(3, 64, kernel_size=11, stride=1, padding=2))
        self.slice1.add_module("1", BlurDownsample(64))
        self.slice1.add_module("2", relu())
        self.slice2 = nn.Sequential()
        self.slice2.add_module("3", nn.MaxPool2d(kernel_size=3, stride=1))
        self.slice2.add_module("4", BlurDownsample(64))
        self.slice2.add_module("5", nn.Conv2d(64, 192, kernel_size=5, padding=2))
        self.slice2.add_module("6", relu())
        self.slice3 = nn.Sequential()
        self.slice3.add_module("7", nn.MaxPool2d(kernel_size=3, stride=1))
        self.slice3.add_module("8", BlurDownsample(192))
        self.slice3.add_module("9", nn.Conv2d(192, 384, kernel_size=3, padding=1))
        self.slice3.add_module("10", relu())
        self.slice4 = nn.Sequential()
        self.slice4.add_module("11", nn.Conv2d(384, 256, kernel_size=3, padding=1))
        self.slice4.add_module("12", relu())
        self.slice5 = nn.Sequential()
        self.slice5.add_module("13", nn.Conv2d(256, 256, kernel_size=3, padding=1))
        self.slice5.add_module("14", relu())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in (self.slice1, self.slice2, self.slice3, self.slice4, self.slice5):
            x = stage(x)
            features.append(x)
        return features


class LinearHead(nn.Module):
    """A 1x1 conv weighting one stage's squared feature differences (key `lin<k>.model.1.weight`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential()
        self.model.add_module("1", nn.Conv2d(channels, 1, kernel_size=1, bias=False))


class STLPIPS(nn.Module):
    """ST-LPIPS distance between images (B, 3, H, W) in [-1, 1]: 0 for identical images, larger = less alike."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.net = ShiftTolerantAlexNet()
        for index, channels in enumerate(CHANNELS):
            self.add_module(f"lin{index}", LinearHead(channels))

    @classmethod
    def from_package(cls, device: torch.device | str = "cpu") -> "STLPIPS":
        """Load the AlexNet ST-LPIPS weights shipped in `stlpips-pytorch` (strict: every key must match)."""
        path = package_file("stlpips_pytorch", STLPIPS_WEIGHTS, STLPIPS_INSTALL)
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {key.replace("scaling_layer.", ""): value for key, value in state.items()}
        model = cls()
        model.load_state_dict(state, strict=True)
        return model.to(device, memory_format=torch.channels_last).eval()  # about 2x faster convs on CPU

    def distance(self, output: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
        """One distance per image pair (B,), float, on the network's device; differentiable in both images.

        With `region` (B, 1, H, W), e.g. the hole, each stage's distance map is averaged over that region only
        (resized to the stage's size by area), as LPIPS's spatial mode would be: a hole ST-LPIPS that the
        known pixels do not dilute.
        """
        return self.distances(output, target, region)[0 if region is None else 1]

    def distances(
        self, output: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(whole-image distance, distance over `region` or None), both (B,), from one pass of the network."""
        device, layout = self.shift.device, torch.channels_last
        first = self.net(((output.to(device).float() - self.shift) / self.scale).contiguous(memory_format=layout))
        second = self.net(((target.to(device).float() - self.shift) / self.scale).contiguous(memory_format=layout))
        whole = torch.zeros(output.shape[0], device=device)
        inside = None if region is None else torch.zeros_like(whole)
        for index, (a, b) in enumerate(zip(first, second, strict=True)):
            a, b = unit_length(a), unit_length(b)
            weighted = getattr(self, f"lin{index}").model((a - b).pow(2))  # (B, 1, h, w)
            whole = whole + weighted.mean(dim=(1, 2, 3))
            if region is not None:
                where = F.interpolate(region.to(device).float(), size=weighted.shape[2:], mode="area")
                inside = inside + (weighted * where).sum(dim=(1, 2, 3)) / where.sum(dim=(1, 2, 3)).clamp_min(1e-8)
        return whole, inside

    @torch.inference_mode()
    def forward(self, output: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
        """One distance per image pair, float (B,) on the CPU: the judge's path (no autograd)."""
        return self.distance(output, target, region).cpu()
