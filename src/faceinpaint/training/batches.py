"""The training loop's data per step: seeded batches, masks, same-identity references, hole crops, validation.

Every random draw is taken from a generator seeded by (seed, stream, step, rank), so a resumed run sees exactly
the batches of the uninterrupted one. Streams: 0 epoch order, 1 flips, 2 masks, 3 reference picks, 4 reference
flips, 5 reference dropout, 6 self-references, 7 their jitter (6 and 7 only where `train.self_reference` > 0, so
runs without it draw what they always drew). Two-Face v2's reference prior (prior_batch) is a function of these
draws and of the photos' landmarks, found once (faces/landmark_cache.py).
"""

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceinpaint.config import Config
from faceinpaint.data.datasets import TwoFaceDataset
from faceinpaint.data.device import identity_index, image_names, load_uint8
from faceinpaint.data.mask_batches import torch_masks
from faceinpaint.data.masks import mask_set
from faceinpaint.training.losses import hole_metrics


def seeded(*numbers: int) -> torch.Generator:
    """A CPU generator whose stream depends only on `numbers` (seed, stream id, step, ...)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(numbers)).generate_state(1)[0]))


def _source(cfg: Config, split: str):
    """What load_uint8 reads for the train or val split: the data path, or the seed's dataset split."""
    path = cfg.data.train if split == "train" else cfg.data.val
    if cfg.data.layout == "twoface":
        return TwoFaceDataset(path, "train" if split == "train" else "validation", cfg.model.resolution, flip=False)
    return path


def load_images(cfg: Config, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 (N, 3, R, R) images of the train or val split, and int64 (N,) identities when the arch needs them.

    Layout "files": `data.train` / `data.val` are a .flist, folder or .zip, the identity is the parent folder's
    name. Layout "twoface": both name the seed's dataset dir (or its data.zip); train reads its `train/` split,
    val its `validation/` split, and every photo of a split (masked, real, reference) may play every role.
    """
    source = _source(cfg, split)
    images = load_uint8(source, cfg.model.resolution, cfg.data.workers)
    return images, (identity_index(source) if cfg.model.guided else None)


def load_landmarks(cfg: Config, split: str, images: torch.Tensor) -> torch.Tensor:
    """dlib's 68 landmarks (N, 68, 2) of the split's photos (the reference prior's), cached beside the data path."""
    from faceinpaint.faces.landmark_cache import cached_landmarks

    path = cfg.data.train if split == "train" else cfg.data.val
    cache = Path(f"{path}.{split}-landmarks{cfg.model.resolution}.npz")
    workers = max(1, min(cfg.data.workers, os.cpu_count() or 1))
    return cached_landmarks(images, image_names(_source(cfg, split)), cache, workers)


def batch_index(size: int, step: int, rank: int, world: int, cfg: Config) -> torch.Tensor:
    """This rank's image numbers (B,) at a step: epoch-wise shuffles of the whole set."""
    batch = cfg.train.batch_size
    positions = torch.arange((step * world + rank) * batch, (step * world + rank + 1) * batch)
    epochs, index = positions // size, torch.empty(batch, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        chosen = epochs == epoch
        index[chosen] = torch.randperm(size, generator=seeded(cfg.train.seed, 0, epoch))[positions[chosen] % size]
    return index


def drawn_flips(count: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """(count,) bool: which samples `pixels` mirrors (probability 1/2 each when `flip`)."""
    if not flip:
        return torch.zeros(count, dtype=torch.bool)
    return torch.rand(count, generator=generator) < 0.5


def pixels(images: torch.Tensor, index: torch.Tensor, flip: bool, generator: torch.Generator, device) -> torch.Tensor:
    """uint8 images[index], mirrored with probability 1/2 when `flip`, as float [-1, 1] on the device."""
    chosen = images[index.to(images.device)].to(device, non_blocking=True)
    if flip:
        flips = drawn_flips(len(index), flip, generator).to(device)
        chosen = torch.where(flips.view(-1, 1, 1, 1), chosen.flip(-1), chosen)
    return chosen.float() / 127.5 - 1.0


def masks(step: int, rank: int, cfg: Config, device) -> torch.Tensor:
    """One mask per sample, its kind drawn from cfg.data.masks: float (B, 1, R, R), 1 = hole."""
    generator = seeded(cfg.train.seed, 2, step, rank)
    batch, size, kinds = cfg.train.batch_size, cfg.model.resolution, cfg.data.masks
    choice = torch.randint(len(kinds), (batch,), generator=generator)
    holes = torch.empty(batch, 1, size, size, device=device)
    for number, kind in enumerate(kinds):
        chosen = (choice == number).nonzero().flatten()
        if len(chosen):
            holes[chosen.to(device)] = torch_masks(kind, len(chosen), size, generator, device)
    return holes


class References:
    """Same-identity lookups: for any image, a uniformly drawn *other* photo of the same person."""

    def __init__(self, identities: torch.Tensor):
        identities = identities.cpu()
        self.by_identity = torch.argsort(identities, stable=True)  # each identity is a run [start, start + count)
        _, inverse, counts = torch.unique(identities, return_inverse=True, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(identities)
        rank[self.by_identity] = torch.arange(len(identities))
        self.start, self.count, self.rank = starts[inverse], counts[inverse], rank - starts[inverse]  # per image

    def pick(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(reference image numbers (B,), available (B,) bool): False where the identity has one photo only.

        Where nothing is available the image's own number is returned; the caller must not show it as a reference.
        """
        index = index.cpu()
        count = self.count[index]
        draw = (torch.rand(len(index), generator=generator) * (count - 1).clamp_min(1)).long()
        draw = draw + (draw >= self.rank[index]).long()  # skip over the image itself
        available = count >= 2
        return torch.where(available, self.by_identity[(self.start[index] + draw).clamp_max(len(self.rank) - 1)],
                           index), available  # fmt: skip


def reference_batch(
    images: torch.Tensor, references: References, index: torch.Tensor, step: int, rank: int, cfg: Config, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(reference (B, 3, R, R) in [-1, 1], available (B,), given (B,), picks (B,)) for the images `index` of a step.

    `available`: the person has another photo, or the sample is a self-reference (the identity loss to the reference
    uses it). `given`: available and not dropped (probability `train.reference_dropout`): the generator's
    `has_reference`. References that are not given are zeroed; the model ignores them exactly, by the flag, never
    reading them as a black photo.
    `picks`: the references' image numbers. With probability `train.self_reference` a sample's reference is its own
    photo, `jittered`: the exemplar-as-itself training of Paint by Example (Yang et al., CVPR 2023), here so that the
    reference branch and the prior channels learn early that the reference carries the hole's content.
    """
    picks, available = references.pick(index, seeded(cfg.train.seed, 3, step, rank))
    own = None
    if cfg.train.self_reference > 0:  # the photo itself stands in as its reference (jittered below)
        own = torch.rand(len(index), generator=seeded(cfg.train.seed, 6, step, rank)) < cfg.train.self_reference
        picks, available = torch.where(own, index.cpu(), picks), available | own
    reference = pixels(images, picks, cfg.data.flip, seeded(cfg.train.seed, 4, step, rank), device)
    if own is not None and own.any():
        jitter = jittered(reference, seeded(cfg.train.seed, 7, step, rank))
        reference = torch.where(own.to(device).view(-1, 1, 1, 1), jitter, reference)
    kept = torch.rand(len(index), generator=seeded(cfg.train.seed, 5, step, rank)) >= cfg.train.reference_dropout
    given = (available & kept).to(device)
    reference = reference * available.to(device).view(-1, 1, 1, 1)
    return reference, available.to(device), given, picks


def jittered(reference: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """References (B, 3, R, R) in [-1, 1] each re-lit and slightly moved, as another photo of the person would be:
    contrast 0.75-1.25, brightness -0.1..0.1 and a gain 0.9-1.1 per channel (on [0, 1]), then a similarity of
    up to 5 degrees, 5 % scale and 4 % shift (edges repeated), so that copying it pixel for pixel is never exact."""
    batch = reference.shape[0]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return (low + (high - low) * torch.rand(batch, *shape, generator=generator)).to(reference.device)

    contrast, brightness, gain = uniform(0.75, 1.25, 1, 1, 1), uniform(-0.1, 0.1, 1, 1, 1), uniform(0.9, 1.1, 3, 1, 1)
    lit = (((reference + 1) / 2 - 0.5) * contrast + 0.5 + brightness) * gain
    angle, scale, shift = uniform(-5.0, 5.0).deg2rad(), uniform(0.95, 1.05), uniform(-0.08, 0.08, 2)
    theta = torch.zeros(batch, 2, 3, device=reference.device)
    theta[:, 0, 0], theta[:, 0, 1] = angle.cos() / scale, -angle.sin() / scale  # output -> input coordinates
    theta[:, 1, 0], theta[:, 1, 1] = angle.sin() / scale, angle.cos() / scale
    theta[:, :, 2] = shift  # 0.08 of the [-1, 1] span is 4 % of the image
    grid = F.affine_grid(theta.to(reference.dtype), list(reference.shape), align_corners=False)
    moved = F.grid_sample(lit.clamp(0, 1), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return moved * 2 - 1


def prior_batch(
    reference: torch.Tensor,
    landmarks: torch.Tensor,
    index: torch.Tensor,
    picks: torch.Tensor,
    mask: torch.Tensor,
    step: int,
    rank: int,
    cfg: Config,
) -> torch.Tensor:
    """The reference prior (B, 4, R, R) of a step's batch: each reference warped onto its masked image by the
    photos' landmarks (N, 68, 2), mirrored as `pixels` mirrored the photos (streams 1 and 4)."""
    from faceinpaint.faces.reference_prior import batch_prior, mirror_landmarks

    size = cfg.model.resolution

    def points(numbers: torch.Tensor, stream: int) -> torch.Tensor:
        chosen = landmarks[numbers.to(landmarks.device)]
        flips = drawn_flips(len(numbers), cfg.data.flip, seeded(cfg.train.seed, stream, step, rank))
        flips = flips.to(landmarks.device).view(-1, 1, 1)
        return torch.where(flips, mirror_landmarks(chosen, size), chosen).to(mask.device)

    return batch_prior(reference, points(picks, 4), points(index, 1), mask)


def hole_crops(images: torch.Tensor, mask: torch.Tensor, size: int) -> torch.Tensor:
    """Square crops (B, C, size, size) around each sample's hole (its bounding box's longer side, at least a
    quarter of the image, kept inside the image), bilinearly resized: the local discriminator's view."""
    batch, _, height, width = mask.shape
    hole = mask.detach()[:, 0] > 0.5
    rows, cols = hole.any(dim=2), hole.any(dim=1)  # (B, H), (B, W)
    ys, xs = torch.arange(height, device=mask.device), torch.arange(width, device=mask.device)
    top, bottom = torch.where(rows, ys, height).amin(1), torch.where(rows, ys + 1, 0).amax(1)
    left, right = torch.where(cols, xs, width).amin(1), torch.where(cols, xs + 1, 0).amax(1)
    empty = bottom <= top
    side = torch.maximum(bottom - top, right - left).clamp(min(height, width) // 4, min(height, width)).float()
    centre_y = torch.where(empty, height / 2, (top + bottom) / 2).clamp(side / 2, height - side / 2)
    centre_x = torch.where(empty, width / 2, (left + right) / 2).clamp(side / 2, width - side / 2)
    theta = torch.zeros(batch, 2, 3, device=mask.device)
    theta[:, 0, 0], theta[:, 0, 2] = side / width, 2 * centre_x / width - 1  # grid_sample's edge coordinates
    theta[:, 1, 1], theta[:, 1, 2] = side / height, 2 * centre_y / height - 1
    grid = F.affine_grid(theta.to(images.dtype), [batch, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def validation_set(cfg: Config) -> dict:
    """The fixed validation subset: uint8 images, float masks (the first mask kind) and, for twoface, references."""
    images, identities = load_images(cfg, "val")
    chosen = torch.arange(len(images))
    if identities is not None:  # only people with a second photo, so that "with the reference" means something
        references = References(identities)
        chosen = chosen[references.count >= 2]
    chosen = chosen[: cfg.train.val_images]
    holes = torch.from_numpy(mask_set(cfg.data.masks[0], len(chosen), cfg.model.resolution, seed=0))
    subset = {"images": images[chosen], "masks": holes[:, None].float(), "references": None, "priors": None}
    if identities is not None:
        picks = references.pick(chosen, seeded(0, 3))[0]
        subset["references"] = images[picks]
        if cfg.model.reference_prior:
            from faceinpaint.faces.reference_prior import batch_prior

            landmarks = load_landmarks(cfg, "val", images)
            reference = subset["references"].float() / 127.5 - 1.0
            subset["priors"] = batch_prior(reference, landmarks[picks], landmarks[chosen], subset["masks"])
    return subset


@torch.no_grad()
def validate(generator: nn.Module, subset: dict, device, batch_size: int) -> dict:
    """Hole L1 and PSNR of the composited output; with `_reference` keys also given the reference (twoface)."""
    images, holes, references = subset["images"], subset["masks"], subset["references"]
    real = images.float() / 127.5 - 1.0
    results = {}
    for suffix, use in (("", False), ("_reference", True)) if references is not None else (("", False),):
        outputs = []
        for start in range(0, len(images), batch_size):
            image = real[start : start + batch_size].to(device)
            mask = holes[start : start + batch_size].to(device)
            extra = {}
            if use:
                extra["reference"] = references[start : start + batch_size].to(device).float() / 127.5 - 1.0
                if subset.get("priors") is not None:
                    extra["prior"] = subset["priors"][start : start + batch_size].to(device)
            outputs.append(generator(image * (1 - mask), mask, **extra)[1].float().cpu())
        results.update({key + suffix: value for key, value in hole_metrics(torch.cat(outputs), real, holes).items()})
    return results
