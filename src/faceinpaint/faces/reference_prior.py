"""The reference prior of Two-Face v2: the reference photo warped onto the masked face, as 4 input channels.

At inference the warp is faces/reference_warp.py's (landmarks of both photos, those of the masked one away from the
hole). Training does the same fit for a whole batch on the device, from landmarks found once per photo
(faces/landmark_cache.py), so a batch costs no detector call: a weighted least-squares similarity transform over the
target's landmarks outside the hole (by `TRUST_MARGIN` eye distances), all of them where fewer than
`MIN_TRUSTED` are. The channels: the warped reference in [-1, 1], zero where the warp has no pixels, and the
validity mask (1 = reference pixels there).
"""

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from faceinpaint.errors import InpaintError
from faceinpaint.faces.reference_warp import MIN_TRUSTED, TRUST_MARGIN, WarpedReference, warp_reference
from faceinpaint.images import tensor_to_uint8, uint8_to_tensor

# dlib's 68 landmarks of a mirrored face: point i of the mirror image is point FLIP_68[i] of the face, mirrored
# (jaw, brows, nose, nostrils, eyes, outer and inner lips, each read from the other side).
FLIP_68 = (
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65]
)


def mirror_landmarks(points: torch.Tensor, width: int) -> torch.Tensor:
    """The 68 landmarks (..., 68, 2) of the horizontally mirrored image `width` pixels wide (index coordinates)."""
    mirrored = points[..., FLIP_68, :].clone()
    mirrored[..., 0] = width - 1 - mirrored[..., 0]
    return mirrored


def _eye_distance(points: torch.Tensor) -> torch.Tensor:
    """(B,) eye-to-eye distances of 68 landmarks (B, 68, 2)."""
    return (points[:, 42:48].mean(1) - points[:, 36:42].mean(1)).norm(dim=1)


def trusted_weights(points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 68) 1.0 for the landmarks (B, 68, 2) of a masked face that lie outside its hole (B, 1, H, W) by
    TRUST_MARGIN eye distances, 0.0 for the others; all ones where fewer than MIN_TRUSTED are outside."""
    batch, _, height, width = mask.shape
    margin = int(max(round(TRUST_MARGIN * float(_eye_distance(points).median())), 1))
    near = F.max_pool2d(mask.float(), 2 * margin + 1, stride=1, padding=margin)[:, 0] > 0.5  # (B, H, W)
    columns = points[..., 0].round().long().clamp(0, width - 1)
    rows = points[..., 1].round().long().clamp(0, height - 1)
    inside = (points[..., 0] >= 0) & (points[..., 0] < width) & (points[..., 1] >= 0) & (points[..., 1] < height)
    hidden = near[torch.arange(batch, device=mask.device)[:, None], rows, columns]
    trusted = (inside & ~hidden).float()
    few = trusted.sum(1, keepdim=True) < MIN_TRUSTED
    return torch.where(few, torch.ones_like(trusted), trusted)


def fit_similarity(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) similarity transforms (rotation, uniform scale, translation) taking source points (B, N, 2) to
    target points, weighted least squares (the closed form with points as complex numbers: t = a s + b)."""
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-9)
    source = torch.complex(source[..., 0].double(), source[..., 1].double())
    target = torch.complex(target[..., 0].double(), target[..., 1].double())
    w = weights.double()
    source_mean, target_mean = (w * source).sum(1, keepdim=True), (w * target).sum(1, keepdim=True)
    centred_source, centred_target = source - source_mean, target - target_mean
    scale = (w * centred_source.conj() * centred_target).sum(1) / (w * centred_source.abs() ** 2).sum(1).clamp_min(
        1e-9
    )
    shift = target_mean[:, 0] - scale * source_mean[:, 0]
    matrix = torch.stack(
        [
            torch.stack([scale.real, -scale.imag, shift.real], 1),
            torch.stack([scale.imag, scale.real, shift.imag], 1),
        ],
        1,
    )
    return matrix.float()


def warp_batch(reference: torch.Tensor, matrix: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The prior (B, 4, H, W) of references (B, 3, h, w) in [-1, 1] under transforms (B, 2, 3) reference -> target
    (pixel index coordinates, as OpenCV's): bilinear, valid where the target pixel's source lies inside."""
    height, width = size
    source_height, source_width = reference.shape[-2:]
    linear, shift = matrix[:, :, :2].double(), matrix[:, :, 2].double()
    inverse = torch.linalg.inv(linear)  # target -> reference
    ys, xs = torch.meshgrid(
        torch.arange(height, device=reference.device, dtype=torch.float64),
        torch.arange(width, device=reference.device, dtype=torch.float64),
        indexing="ij",
    )
    target = torch.stack([xs, ys], -1).view(1, -1, 2) - shift[:, None]  # (B, HW, 2)
    source = target @ inverse.transpose(1, 2)  # pixel coordinates in the reference
    inside = (source[..., 0] >= 0) & (source[..., 0] <= source_width - 1)
    inside &= (source[..., 1] >= 0) & (source[..., 1] <= source_height - 1)
    sizes = torch.tensor([source_width, source_height], device=reference.device, dtype=torch.float64)
    grid = ((2 * source + 1) / sizes - 1).view(-1, height, width, 2).to(reference.dtype)  # align_corners=False
    warped = F.grid_sample(reference, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    valid = inside.view(-1, 1, height, width).to(reference.dtype)
    return torch.cat([warped * valid, valid], dim=1)


def batch_prior(
    reference: torch.Tensor, reference_points: torch.Tensor, target_points: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The training prior (B, 4, H, W): references (B, 3, h, w) warped onto the masked targets (mask (B, 1, H, W),
    1 = hole) by their landmarks (B, 68, 2) each, fitted on the target's landmarks away from the hole."""
    matrix = fit_similarity(reference_points, target_points, trusted_weights(target_points, mask))
    return warp_batch(reference, matrix, mask.shape[-2:])


def prior_from_warp(warp: WarpedReference) -> torch.Tensor:
    """The prior (1, 4, H, W) of reference_warp.warp_reference's result (the inference path)."""
    valid = torch.from_numpy(warp.valid)[None, None].float()
    return torch.cat([uint8_to_tensor(warp.image[None]) * valid, valid], dim=1)


def prior_input(image: np.ndarray, hole: np.ndarray, reference: np.ndarray, landmarks: int = 68) -> np.ndarray:
    """The `prior` input (R, R, 4) uint8 of Two-Face v2's exported graph (backends/export.py) for one aligned face
    `image` (R, R, 3) uint8 with `hole` (R, R) bool and its `reference` photo (uint8 RGB, any size): the reference
    warped onto the face (RGB, 0 where the warp has no pixels) and 255 where it has. The same warp as the PyTorch
    path; raises InpaintError where it fails (no face in the reference): then run the graph without a reference,
    or with a prior of zeros, as `image_prior` does."""
    warp = warp_reference(image, hole, reference, landmarks)
    return np.dstack([warp.image * warp.valid[..., None], warp.valid.astype(np.uint8) * 255])


def image_prior(image: torch.Tensor, hole: torch.Tensor, reference: torch.Tensor, landmarks: int = 68) -> torch.Tensor:
    """The inference prior (B, 4, H, W) of masked images (B, 3, H, W) in [-1, 1] with holes (B, 1, H, W), 1 =
    hole, and their references (B, 3, h, w): reference_warp.warp_reference per image. Where it fails (no face in
    the reference, degenerate landmarks) that image gets an empty prior, with a warning: the model then completes
    it from the reference's cross-attention alone."""
    priors = []
    holes = hole[:, 0].cpu().numpy() > 0.5
    for one, where, other in zip(tensor_to_uint8(image.cpu()), holes, tensor_to_uint8(reference.cpu()), strict=True):
        try:
            priors.append(prior_from_warp(warp_reference(one, where, other, landmarks)))
        except InpaintError as error:
            warnings.warn(f"reference prior: {error}; this image is completed without it", stacklevel=3)
            priors.append(torch.zeros(1, 4, *where.shape))
    return torch.cat(priors).to(image.device)
