"""Main training loop: DeepFillv2 or Two-Face; L1 on both stages, hinge SN-PatchGAN(s), identity loss, EMA, DDP.

One process or many (`torchrun --nproc_per_node N -m faceinpaint.cli train CONFIG`) take the same path; rank 0
does all I/O. Every random draw of a step (its images, flips, masks and references) is derived from
(seed, step, rank) in train_data.py, so a resumed run sees exactly the batches the uninterrupted run would have seen.

Two-Face (arch twoface) adds: a reference per sample, another photo of the same person (never the image itself),
dropped with probability `train.reference_dropout` through the generator's per-sample `has_reference` flag; a
local discriminator on a square crop around the hole (`train.local_gan`); and dlib's identity loss to the ground
truth and to the reference (`train.identity_weight`). Each term is skipped when its weight is 0.
"""

import json
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from faceinpaint.config import Config
from faceinpaint.errors import InpaintError
from faceinpaint.figures import save_grid
from faceinpaint.losses import (
    adversarial_weight,
    dlib_feature_loss,
    feature_matching,
    hinge_discriminator,
    hinge_generator,
    hole_l1,
    identity_losses,
    l1,
)
from faceinpaint.train_data import (
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
    validate,
    validation_set,
)
from faceinpaint.train_setup import (
    build_networks,
    build_optimizers,
    choose_run_dir,
    cpu_has_bf16,
    distributed,
    open_writer,
    resume_from,
    save_state,
)


@dataclass
class TrainResult:
    run_dir: Path  # where the logs, samples and checkpoints are
    step: int  # the last completed step
    generator: nn.Module  # the EMA generator (what export-weights publishes)


class _StopSignal:
    """Turns SIGTERM / SIGINT into a flag the loop checks, so the run saves a checkpoint before it exits."""

    def __init__(self):
        self.received = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, number, frame):
        self.received = signal.Signals(number).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def train(
    cfg: Config,
    resume: str | Path | None = None,
    max_minutes: float | None = None,
    max_cpu_minutes: float | None = None,
) -> TrainResult:
    """Train the generator and discriminator of `cfg`; write logs, samples and checkpoints into a run dir.

    Args:
        cfg: the experiment (see config.py and configs/).
        resume: a run dir (its latest checkpoint) or a checkpoint file to continue from, in its own run dir.
        max_minutes: save and stop after this much wall time (also on SIGTERM / SIGINT).
        max_cpu_minutes: save and stop after this process has used this much CPU time (all its threads): equal
            budgets for runs that share a machine, e.g. the arms of an ablation.
    Returns:
        The run dir, the last step and the EMA generator.
    """
    rank, world, device = distributed()
    bf16 = cfg.train.bf16 and (device.type == "cuda" or cfg.train.cpu_bf16)
    if bf16 and device.type == "cpu" and not cpu_has_bf16():
        warnings.warn("train.cpu_bf16: this CPU has no AVX512-BF16 or AMX, so it trains in float32", stacklevel=2)
        bf16 = False
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    started, cpu_started = time.monotonic(), time.process_time()

    # Build data.
    if not cfg.data.train:
        raise InpaintError("data.train is empty: give a .flist, folder or .zip of training images")
    guided = cfg.model.guided  # a reference per sample, validation with and without it
    train_images, identities = load_images(cfg, "train")
    references = References(identities) if guided else None
    # Two-Face v2: every photo's landmarks (found once, cached), for the reference prior of each batch.
    landmarks = load_landmarks(cfg, "train", train_images) if guided and cfg.model.reference_prior else None
    if cfg.data.resident:
        train_images = train_images.to(device)
        landmarks = None if landmarks is None else landmarks.to(device)
    val_set = validation_set(cfg) if cfg.data.val and rank == 0 else None

    # Build networks and optimisers; resume; choose the run dir.
    nets = build_networks(cfg, device, memory_format, warm=resume is None, rank=rank)
    generator, discriminator, local, ema = nets.generator, nets.discriminator, nets.local, nets.ema
    discriminators, identity_network, stlpips = nets.discriminators, nets.identity_network, nets.stlpips
    parts_region, matching = nets.parts_region, cfg.train.feature_matching_weight > 0
    optimizers = build_optimizers(nets, cfg, device)
    optimizer_g, optimizer_d = optimizers.generator, optimizers.discriminator
    checkpoint, state = resume_from(resume, nets, optimizers, cfg) if resume is not None else (None, {})
    start_step, wall_before = state.get("step", 0), state.get("wall_seconds", 0.0)
    run_dir, in_run = choose_run_dir(cfg, checkpoint, state, rank, world)
    generator_train = DistributedDataParallel(generator) if world > 1 else generator
    discriminator_train = DistributedDataParallel(discriminator) if world > 1 else discriminator
    local_train = DistributedDataParallel(local) if world > 1 and local is not None else local
    if cfg.train.compile:
        generator_train, discriminator_train = torch.compile(generator_train), torch.compile(discriminator_train)
        local_train = torch.compile(local_train) if local is not None else None
    writer = open_writer(run_dir, cfg, start_step, in_run) if rank == 0 else None

    def log(record: dict) -> None:
        with open(run_dir / "metrics.jsonl", "a") as stream:
            stream.write(json.dumps(record) + "\n")
        if writer is not None:
            for key, value in record.items():
                if key not in ("kind", "step") and isinstance(value, (int, float)):
                    writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def save(step: int) -> None:
        wall = wall_before + time.monotonic() - started
        save_state(run_dir, step, cfg, nets, optimizers, wall, world, device)

    step = start_step
    sums, counts = {}, {}  # loss name -> its sum (kept on the device: no sync per step) and count since the last log
    crop = cfg.model.resolution // 2  # the local discriminator's input size
    last_time, last_step = time.monotonic(), start_step
    bar = tqdm(total=cfg.train.max_steps, initial=start_step, disable=None if rank == 0 else True, file=sys.stderr)
    with _StopSignal() as stop:
        while step < cfg.train.max_steps:
            index = batch_index(len(train_images), step, rank, world, cfg)
            real = pixels(train_images, index, cfg.data.flip, seeded(cfg.train.seed, 1, step, rank), device)
            real = real.contiguous(memory_format=memory_format)
            mask = masks(step, rank, cfg, device)
            guide, reference, available = {}, real, torch.zeros(len(index), dtype=torch.bool, device=device)
            if guided:  # another photo of the same person; `given` is False where dropped or there is none
                reference, available, given, picks = reference_batch(
                    train_images, references, index, step, rank, cfg, device
                )
                guide = {"reference": reference.contiguous(memory_format=memory_format), "has_reference": given}
                if landmarks is not None:
                    prior = prior_batch(reference, landmarks, index, picks, mask, step, rank, cfg)
                    guide["prior"] = prior.contiguous(memory_format=memory_format)

            # Discriminator step: real and completed images in one batch (one forward per step under DDP). Without
            # the adversarial term (a reconstruction warm-up, or before train.gan_start_step) it is skipped.
            gan = adversarial_weight(step, cfg.train.gan, cfg.train.gan_start_step, cfg.train.gan_ramp_steps)
            local_gan = adversarial_weight(
                step, cfg.train.local_gan, cfg.train.gan_start_step, cfg.train.gan_ramp_steps
            )
            with autocast:
                coarse, refined = generator_train(real, mask, **guide)
                completed = refined * mask + real * (1.0 - mask)
                terms = {}
                if gan > 0:  # with feature matching, the real images' features are kept as its targets
                    layers = discriminator_train(torch.cat([real, completed.detach()]), torch.cat([mask, mask]),
                                                 features=True)  # fmt: skip
                    terms["loss_d"] = hinge_discriminator(*layers[-1].chunk(2))
                    real_features = [layer.chunk(2)[0].detach() for layer in layers[:-1]] if matching else None
                if local is not None and local_gan > 0:  # crops of (real, completed, mask) around the hole
                    crops = hole_crops(torch.cat([real, completed.detach(), mask], dim=1), mask, crop)
                    real_crop, fake_crop, mask_crop = crops.split([3, 3, 1], dim=1)  # of (B, 7, crop, crop)
                    scores = local_train(torch.cat([real_crop, fake_crop]), torch.cat([mask_crop, mask_crop]))
                    terms["loss_d_local"] = hinge_discriminator(*scores.chunk(2))
            if terms:
                optimizer_d.zero_grad(set_to_none=True)
                sum(terms.values()).backward()
                optimizer_d.step()

            # Generator step: the bare discriminators, frozen, so DDP syncs no gradient it does not need.
            for network in discriminators:
                network.requires_grad_(False)
            with autocast:
                terms["l1_coarse"], terms["l1_refined"] = l1(coarse, real), l1(refined, real)
                loss_g = cfg.train.l1_coarse * terms["l1_coarse"] + cfg.train.l1_refined * terms["l1_refined"]
                if gan > 0:
                    layers = discriminator(completed, mask, features=True)
                    terms["loss_g_adv"] = hinge_generator(layers[-1])
                    loss_g = loss_g + gan * terms["loss_g_adv"]
                    if matching:
                        terms["feature_matching"] = feature_matching(real_features, layers[:-1])
                        loss_g = loss_g + cfg.train.feature_matching_weight * terms["feature_matching"]
                if local is not None and local_gan > 0:
                    fake_crop = hole_crops(completed, mask, crop)
                    terms["loss_g_local"] = hinge_generator(local(fake_crop, mask_crop))
                    loss_g = loss_g + local_gan * terms["loss_g_local"]
                if parts_region is not None:  # the hole's pixels over the eyes, nose and mouth, once more
                    terms["l1_parts"] = hole_l1(refined, real, mask * parts_region)
                    loss_g = loss_g + cfg.train.part_l1_weight * terms["l1_parts"]
                if stlpips is not None:
                    terms["stlpips"] = stlpips.distance(completed, real).mean()
                    loss_g = loss_g + cfg.train.stlpips_weight * terms["stlpips"]
                if cfg.train.dlib_feature_weight > 0:
                    terms["dlib_features"] = dlib_feature_loss(identity_network, completed, real)
                    loss_g = loss_g + cfg.train.dlib_feature_weight * terms["dlib_features"]
                if cfg.train.identity_weight > 0:  # to the ground truth, and to the reference where there is one
                    to_target, to_reference = identity_losses(identity_network, completed, real, reference, available)
                    terms["identity_target"], terms["identity_reference"] = to_target, to_reference
                    loss_g = loss_g + cfg.train.identity_weight * (to_target + to_reference)
            optimizer_g.zero_grad(set_to_none=True)
            loss_g.backward()
            optimizer_g.step()
            for network in discriminators:
                network.requires_grad_(True)

            # Update EMA, with a short warm-up so that early checkpoints do not average in the random start.
            decay = min(cfg.train.ema, (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                for averaged, current in zip(ema.parameters(), generator.parameters(), strict=True):
                    averaged.lerp_(current, 1.0 - decay)
            for name, value in terms.items():  # a term may start mid-interval (train.gan_start_step)
                sums[name] = sums.get(name, 0.0) + value.detach().float()
                counts[name] = counts.get(name, 0) + 1
            step += 1
            bar.update(1)

            # Log, sample, validate, save.
            out_of_time = max_minutes is not None and time.monotonic() - started > 60.0 * max_minutes
            out_of_time |= max_cpu_minutes is not None and time.process_time() - cpu_started > 60.0 * max_cpu_minutes
            stopping = stop.received is not None or out_of_time
            if world > 1:  # stop together (or DDP hangs), agreeing every 10 steps to spare a sync per step
                flag = torch.tensor([float(stopping)], device=device)
                if step % 10 == 0:
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stopping = step % 10 == 0 and bool(flag.item())
            if rank != 0:
                if stopping:
                    break
                continue
            if step % cfg.train.log_every == 0 or stopping or step == cfg.train.max_steps:
                now = time.monotonic()
                values = torch.stack(list(sums.values())).tolist()
                means = {name: value / counts[name] for name, value in zip(sums, values, strict=True)}
                record = {"kind": "train", "step": step, **means, "lr": cfg.train.lr,
                          "it_per_s": (step - last_step) / max(now - last_time, 1e-9)}  # fmt: skip
                if device.type == "cuda":
                    record["gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                log(record)
                bar.set_postfix(l1=f"{means['l1_refined']:.4f}", d=f"{means.get('loss_d', 0.0):.3f}")
                eta = (cfg.train.max_steps - step) / max(record["it_per_s"], 1e-9)
                with open(run_dir / "log.txt", "a") as stream:
                    stream.write(f"step {step} " + " ".join(f"{k}={v:.4g}" for k, v in list(record.items())[2:])
                                 + f" eta={eta / 3600:.2f}h\n")  # fmt: skip
                sums, counts = {}, {}
                last_time, last_step = now, step
            if step % cfg.train.sample_every == 0:
                path = run_dir / "samples" / f"step-{step:07d}.png"
                grid = save_grid(real, mask, coarse, refined, path, reference=guide.get("reference"))
                if writer is not None:
                    writer.add_image("samples", grid, step, dataformats="HWC")
            if val_set is not None and (step % cfg.train.val_every == 0 or step == cfg.train.max_steps):
                scores = validate(ema, val_set, device, cfg.train.batch_size)
                log({"kind": "val", "step": step, "resolution": cfg.model.resolution, **scores})
            if step % cfg.train.save_every == 0 or stopping or step == cfg.train.max_steps:
                save(step)
            if stopping:
                reason = stop.received or (f"--max-minutes {max_minutes}" if max_minutes is not None
                                           else f"--max-cpu-minutes {max_cpu_minutes}")  # fmt: skip
                print(
                    f"faceinpaint: stopped at step {step} ({reason}); resume with --resume {run_dir}", file=sys.stderr
                )
                break
    bar.close()
    if writer is not None:
        writer.close()
    if world > 1:
        dist.barrier()
    return TrainResult(run_dir=run_dir, step=step, generator=ema)
