"""Loss terms, each a small function weighted from the config by the training loop.

Beyond DeepFillv2's L1 and hinge terms: feature (perceptual) distances under frozen networks that load offline
(ST-LPIPS's AlexNet in models/perceptual.py, dlib's face ResNet), the discriminator feature matching of pix2pixHD
(Wang et al., CVPR 2018) and LaMa (Suvorov et al., WACV 2022), a ramp for the adversarial weight, and an L1 that
counts the hole's pixels over the face's eyes, nose and mouth once more.
"""

import torch
import torch.nn.functional as F


def l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the whole image (DeepFillv2 applies it to both stages)."""
    return (output.float() - target.float()).abs().mean()


def hinge_discriminator(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """SN-PatchGAN's hinge loss: 0.5 * mean(relu(1 - D(real))) + 0.5 * mean(relu(1 + D(fake)))."""
    return 0.5 * F.relu(1.0 - real_scores.float()).mean() + 0.5 * F.relu(1.0 + fake_scores.float()).mean()


def hinge_generator(fake_scores: torch.Tensor) -> torch.Tensor:
    """The generator's adversarial term: -mean(D(fake))."""
    return -fake_scores.float().mean()


def hole_metrics(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """L1 and PSNR inside the hole, on the [0, 1] scale, pooled over every hole pixel of the batch."""
    hole = mask.expand_as(output) > 0.5
    error = (output.float() - target.float())[hole] / 2.0  # [-1, 1] differences -> [0, 1] scale
    mse = error.pow(2).mean().clamp_min(1e-10)
    return {"hole_l1": float(error.abs().mean()), "hole_psnr": float(10.0 * torch.log10(1.0 / mse))}


def identity_losses(
    network: torch.nn.Module, output: torch.Tensor, target: torch.Tensor, reference: torch.Tensor, available
) -> tuple[torch.Tensor, torch.Tensor]:
    """1 - cosine of dlib descriptors: output vs ground truth (batch mean), output vs reference (mean where
    `available`, a (B,) bool). Only the output gets gradients: the two targets go through dlib's network without
    autograd, which spares its backward pass over two thirds of the batch."""
    from faceinpaint.models.dlib_resnet import identity_embedding

    with torch.no_grad():
        truth, theirs = identity_embedding(network, torch.cat([target, reference])).float().chunk(2)
    mine = identity_embedding(network, output).float()
    to_target = 1.0 - F.cosine_similarity(mine, truth, dim=1).mean()
    weights = available.float()
    to_reference = ((1.0 - F.cosine_similarity(mine, theirs, dim=1)) * weights).sum() / weights.sum().clamp_min(1.0)
    return to_target, to_reference


def hole_l1(output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the pixels where `weight` (B, 1, H, W) is 1 (e.g. hole x face parts); 0 if none."""
    weight = weight.float()
    total = ((output.float() - target.float()).abs() * weight).sum()
    return total / (weight.sum() * output.shape[1]).clamp_min(1.0)


def adversarial_weight(step: int, weight: float, start: int, ramp: int) -> float:
    """The adversarial terms' weight at `step`: 0 before `start`, then up linearly to `weight` over `ramp` steps."""
    if weight <= 0 or step < start:
        return 0.0
    return weight * min(1.0, (step - start + 1) / ramp) if ramp > 0 else weight


def feature_matching(real_features: list[torch.Tensor], fake_features: list[torch.Tensor]) -> torch.Tensor:
    """Mean over the discriminator's layers of L1 between its features of real and of completed images
    (pix2pixHD's feature matching); the real ones are targets, detached."""
    pairs = list(zip(real_features, fake_features, strict=True))
    return sum((fake.float() - real.detach().float()).abs().mean() for real, fake in pairs) / len(pairs)


def dlib_feature_loss(
    network: torch.nn.Module, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """A face-specific perceptual distance: dlib's ResNet stages (models/dlib_resnet.py) of the two faces' chips,
    each unit-normalised along channels as in LPIPS, squared differences summed over channels, averaged over
    positions and the batch, then over the four stages. The target goes through without autograd.

    With `mask` (B, 1, S, S), 1 = hole, each face's average runs over the positions its hole reaches (the hole's
    chip, max-pooled to each stage) instead of the whole chip: a small eye hole then weighs as much as a large one,
    where the whole-chip mean would dilute it by the hole's share of the face. A face whose hole misses the chip
    adds 0."""
    from faceinpaint.models.dlib_resnet import chip_from_aligned
    from faceinpaint.models.perceptual import unit_length

    with torch.no_grad():
        truth = network.stages(chip_from_aligned(target))
        # The mask through the chip's own sampling: [0, 1] -> [-1, 1] in, [0, 255] out.
        holes = None if mask is None else chip_from_aligned(mask.float().expand(-1, 3, -1, -1) * 2 - 1)[:, :1] / 255
    mine = network.stages(chip_from_aligned(output))
    total = 0.0
    for a, b in zip(mine, truth, strict=True):
        distance = (unit_length(a.float()) - unit_length(b.float())).pow(2).sum(dim=1, keepdim=True)
        if holes is None:
            total = total + distance.mean()
            continue
        weight = F.adaptive_max_pool2d(holes, distance.shape[-2:])
        total = total + ((distance * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp_min(1.0)).mean()
    return total / len(mine)
