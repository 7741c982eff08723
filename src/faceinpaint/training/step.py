"""One training step (loop.py calls `make_batch`, `optimise_step`, `update_ema` in order): the batch, the
discriminator losses and the generator's loss, each term named as it is logged, and the two optimiser updates.
Every draw is seeded by (seed, step, rank) in training/batches.py."""

from dataclasses import dataclass

import torch

from faceinpaint.config import Config
from faceinpaint.training.batches import (
    References,
    batch_index,
    hole_crops,
    load_images,
    load_landmarks,
    masks,
    pixels,
    prior_batch,
    reference_batch,
    seeded,
    validation_set,
)
from faceinpaint.training.losses import (
    adversarial_weight,
    dlib_feature_loss,
    feature_matching,
    hinge_discriminator,
    hinge_generator,
    hole_l1,
    identity_losses,
    l1,
)
from faceinpaint.training.setup import Networks, Optimizers, TrainingViews


@dataclass
class TrainingData:
    """The training photos (uint8, on the device when resident), Two-Face's references and landmarks, and rank 0's
    validation set."""

    images: torch.Tensor
    references: References | None
    landmarks: torch.Tensor | None
    val_set: object | None


def training_data(cfg: Config, device: torch.device, rank: int) -> TrainingData:
    guided = cfg.model.guided  # a reference per sample, validation with and without it
    images, identities = load_images(cfg, "train")
    references = References(identities) if guided else None
    # Two-Face v2: every photo's landmarks (found once, cached), for the reference prior of each batch.
    landmarks = load_landmarks(cfg, "train", images) if guided and cfg.model.reference_prior else None
    if cfg.data.resident:
        images = images.to(device)
        landmarks = None if landmarks is None else landmarks.to(device)
    val_set = validation_set(cfg) if cfg.data.val and rank == 0 else None
    return TrainingData(images, references, landmarks, val_set)


@dataclass
class Batch:
    real: torch.Tensor  # (B, 3, R, R) in [-1, 1]
    mask: torch.Tensor  # (B, 1, R, R), 1 = hole
    guide: dict  # the generator's reference keywords (reference, has_reference, prior); empty for DeepFillv2
    reference: torch.Tensor  # the reference photos (the images themselves where there is none)
    available: torch.Tensor  # (B,) bool: a real reference exists (the identity loss to it counts)


def make_batch(data: TrainingData, step: int, rank: int, world: int, cfg: Config, device, memory_format) -> Batch:
    index = batch_index(len(data.images), step, rank, world, cfg)
    real = pixels(data.images, index, cfg.data.flip, seeded(cfg.train.seed, 1, step, rank), device)
    real = real.contiguous(memory_format=memory_format)
    mask = masks(step, rank, cfg, device)
    guide, reference, available = {}, real, torch.zeros(len(index), dtype=torch.bool, device=device)
    if data.references is not None:  # another photo of the same person; `given` is False where dropped or none
        reference, available, given, picks = reference_batch(
            data.images, data.references, index, step, rank, cfg, device
        )
        guide = {"reference": reference.contiguous(memory_format=memory_format), "has_reference": given}
        if data.landmarks is not None:
            prior = prior_batch(reference, data.landmarks, index, picks, mask, step, rank, cfg)
            guide["prior"] = prior.contiguous(memory_format=memory_format)
    return Batch(real, mask, guide, reference, available)


@dataclass
class DiscriminatorPass:
    terms: dict  # loss_d, loss_d_local: what the discriminators' optimiser minimises
    real_features: list | None  # the real images' discriminator features, the feature-matching targets
    mask_crop: torch.Tensor | None  # the hole's crop, for the local discriminator's generator term


def discriminator_losses(batch: Batch, completed, d_global, d_local, gan: float, local_gan: float, matching: bool,
                         crop: int) -> DiscriminatorPass:  # fmt: skip
    """Real and completed images in one batch (one forward per step under DDP); nothing without the adversarial
    term (a reconstruction warm-up, or before train.gan_start_step)."""
    real, mask = batch.real, batch.mask
    terms, real_features, mask_crop = {}, None, None
    if gan > 0:  # with feature matching, the real images' features are kept as its targets
        layers = d_global(torch.cat([real, completed.detach()]), torch.cat([mask, mask]), features=True)
        terms["loss_d"] = hinge_discriminator(*layers[-1].chunk(2))
        real_features = [layer.chunk(2)[0].detach() for layer in layers[:-1]] if matching else None
    if d_local is not None and local_gan > 0:  # crops of (real, completed, mask) around the hole
        crops = hole_crops(torch.cat([real, completed.detach(), mask], dim=1), mask, crop)
        real_crop, fake_crop, mask_crop = crops.split([3, 3, 1], dim=1)  # of (B, 7, crop, crop)
        scores = d_local(torch.cat([real_crop, fake_crop]), torch.cat([mask_crop, mask_crop]))
        terms["loss_d_local"] = hinge_discriminator(*scores.chunk(2))
    return DiscriminatorPass(terms, real_features, mask_crop)


def generator_loss(cfg: Config, nets: Networks, batch: Batch, coarse, refined, completed, d_pass: DiscriminatorPass,
                   gan: float, local_gan: float, crop: int, terms: dict) -> torch.Tensor:  # fmt: skip
    """The generator's weighted loss; each term is also put in `terms` under its logged name. The bare (not DDP)
    discriminators judge, frozen by the caller."""
    real, mask, train = batch.real, batch.mask, cfg.train
    terms["l1_coarse"], terms["l1_refined"] = l1(coarse, real), l1(refined, real)
    loss = train.l1_coarse * terms["l1_coarse"] + train.l1_refined * terms["l1_refined"]
    if gan > 0:
        layers = nets.discriminator(completed, mask, features=True)
        terms["loss_g_adv"] = hinge_generator(layers[-1])
        loss = loss + gan * terms["loss_g_adv"]
        if train.feature_matching_weight > 0:
            terms["feature_matching"] = feature_matching(d_pass.real_features, layers[:-1])
            loss = loss + train.feature_matching_weight * terms["feature_matching"]
    if nets.local is not None and local_gan > 0:
        fake_crop = hole_crops(completed, mask, crop)
        terms["loss_g_local"] = hinge_generator(nets.local(fake_crop, d_pass.mask_crop))
        loss = loss + local_gan * terms["loss_g_local"]
    if nets.parts_region is not None:  # the hole's pixels over the eyes, nose and mouth, once more
        terms["l1_parts"] = hole_l1(refined, real, mask * nets.parts_region)
        loss = loss + train.part_l1_weight * terms["l1_parts"]
    if nets.stlpips is not None:
        terms["stlpips"] = nets.stlpips.distance(completed, real).mean()
        loss = loss + train.stlpips_weight * terms["stlpips"]
    if train.dlib_feature_weight > 0:
        hole = mask if train.dlib_feature_in_hole else None
        terms["dlib_features"] = dlib_feature_loss(nets.identity_network, completed, real, hole)
        loss = loss + train.dlib_feature_weight * terms["dlib_features"]
    if train.identity_weight > 0:  # to the ground truth, and to the reference where there is one
        to_target, to_reference = identity_losses(
            nets.identity_network, completed, real, batch.reference, batch.available
        )
        terms["identity_target"], terms["identity_reference"] = to_target, to_reference
        loss = loss + train.identity_weight * (to_target + to_reference)
    return loss


def optimise_step(cfg: Config, nets: Networks, optimizers: Optimizers, views: TrainingViews, batch: Batch, step: int,
                  autocast) -> tuple[torch.Tensor, torch.Tensor, dict]:  # fmt: skip
    """One update of the discriminators (when an adversarial term is on at `step`), then of the generator.

    Returns the coarse and refined outputs and every loss term by its logged name (tensors on the device)."""
    train, crop = cfg.train, cfg.model.resolution // 2  # crop: the local discriminator's input size
    gan = adversarial_weight(step, train.gan, train.gan_start_step, train.gan_ramp_steps)
    local_gan = adversarial_weight(step, train.local_gan, train.gan_start_step, train.gan_ramp_steps)
    with autocast:
        coarse, refined = views.generator(batch.real, batch.mask, **batch.guide)
        completed = refined * batch.mask + batch.real * (1.0 - batch.mask)
        d_pass = discriminator_losses(batch, completed, views.discriminator, views.local, gan, local_gan,
                                      train.feature_matching_weight > 0, crop)  # fmt: skip
    terms = d_pass.terms
    if terms:
        optimizers.discriminator.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        optimizers.discriminator.step()

    # The generator's update: the bare discriminators judge, frozen, so DDP syncs no gradient it does not need.
    for network in nets.discriminators:
        network.requires_grad_(False)
    with autocast:
        loss = generator_loss(cfg, nets, batch, coarse, refined, completed, d_pass, gan, local_gan, crop, terms)
    optimizers.generator.zero_grad(set_to_none=True)
    loss.backward()
    optimizers.generator.step()
    for network in nets.discriminators:
        network.requires_grad_(True)
    return coarse, refined, terms


@torch.no_grad()
def update_ema(ema: torch.nn.Module, generator: torch.nn.Module, step: int, decay: float) -> None:
    """Move the EMA generator towards the trained one, with a short warm-up so that early checkpoints do not
    average in the random start."""
    decay = min(decay, (1.0 + step) / (10.0 + step))
    for averaged, current in zip(ema.parameters(), generator.parameters(), strict=True):
        averaged.lerp_(current, 1.0 - decay)
