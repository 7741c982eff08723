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
)
from faceinpaint.train_data import (
    validate,
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
from faceinpaint.train_step import discriminator_losses, generator_loss, make_batch, training_data


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
    data = training_data(cfg, device, rank)

    # Build networks and optimisers; resume; choose the run dir.
    nets = build_networks(cfg, device, memory_format, warm=resume is None, rank=rank)
    generator, discriminator, local, ema = nets.generator, nets.discriminator, nets.local, nets.ema
    matching = cfg.train.feature_matching_weight > 0
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
            batch = make_batch(data, step, rank, world, cfg, device, memory_format)
            real, mask = batch.real, batch.mask
            gan = adversarial_weight(step, cfg.train.gan, cfg.train.gan_start_step, cfg.train.gan_ramp_steps)
            local_gan = adversarial_weight(
                step, cfg.train.local_gan, cfg.train.gan_start_step, cfg.train.gan_ramp_steps
            )
            with autocast:
                coarse, refined = generator_train(real, mask, **batch.guide)
                completed = refined * mask + real * (1.0 - mask)
                d_pass = discriminator_losses(batch, completed, discriminator_train, local_train, gan, local_gan,
                                              matching, crop)  # fmt: skip
            terms = d_pass.terms
            if terms:
                optimizer_d.zero_grad(set_to_none=True)
                sum(terms.values()).backward()
                optimizer_d.step()

            # Generator step: the bare discriminators, frozen, so DDP syncs no gradient it does not need.
            for network in nets.discriminators:
                network.requires_grad_(False)
            with autocast:
                loss_g = generator_loss(cfg, nets, batch, coarse, refined, completed, d_pass, gan, local_gan, crop,
                                        terms)  # fmt: skip
            optimizer_g.zero_grad(set_to_none=True)
            loss_g.backward()
            optimizer_g.step()
            for network in nets.discriminators:
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
                grid = save_grid(real, mask, coarse, refined, path, reference=batch.guide.get("reference"))
                if writer is not None:
                    writer.add_image("samples", grid, step, dataformats="HWC")
            if data.val_set is not None and (step % cfg.train.val_every == 0 or step == cfg.train.max_steps):
                scores = validate(ema, data.val_set, device, cfg.train.batch_size)
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
