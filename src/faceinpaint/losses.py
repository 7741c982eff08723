"""Loss terms, each a small function weighted from the config by the training loop."""

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
