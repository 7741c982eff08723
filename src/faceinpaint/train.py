"""Main training loop: DeepFillv2 with L1 on both stages and a hinge SN-PatchGAN, an EMA generator, bf16, DDP.

One process or many (`torchrun --nproc_per_node N -m faceinpaint.cli train CONFIG`) take the same path; rank 0
does all I/O. Every random draw of a step (its images, flips and masks) is derived from (seed, step, rank), so a
resumed run sees exactly the batches the uninterrupted run would have seen.
"""

import copy
import json
import os
import platform
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from faceinpaint.checkpoint import (
    checkpoint_path,
    find_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    run_dir_of,
    save_checkpoint,
)
from faceinpaint.config import Config, dump_config
from faceinpaint.data_device import load_uint8
from faceinpaint.errors import InpaintError
from faceinpaint.figures import save_grid
from faceinpaint.losses import hinge_discriminator, hinge_generator, hole_metrics, l1
from faceinpaint.masks import mask_set, torch_masks
from faceinpaint.models import ARCHITECTURES, SNPatchGAN


@dataclass
class TrainResult:
    run_dir: Path  # where the logs, samples and checkpoints are
    step: int  # the last completed step
    generator: nn.Module  # the EMA generator (what export-weights publishes)


def _seeded(*numbers: int) -> torch.Generator:
    """A CPU generator whose stream depends only on `numbers` (seed, stream id, step, ...)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(numbers)).generate_state(1)[0]))


def _distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the torchrun process group when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _new_run_dir(root: Path, name: str) -> Path:
    numbers = [int(p.name[:5]) for p in root.glob("[0-9][0-9][0-9][0-9][0-9]-*")] if root.is_dir() else []
    run_dir = root / f"{max(numbers, default=-1) + 1:05d}-{name}"
    run_dir.mkdir(parents=True)
    return run_dir


def _batch(images: torch.Tensor, step: int, rank: int, world: int, cfg: Config, device) -> torch.Tensor:
    """This rank's images of a step: epoch-wise shuffles of the whole set, flips, float [-1, 1] on the device."""
    size, batch = len(images), cfg.train.batch_size
    positions = torch.arange((step * world + rank) * batch, (step * world + rank + 1) * batch)
    epochs, index = positions // size, torch.empty(batch, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        chosen = epochs == epoch
        index[chosen] = torch.randperm(size, generator=_seeded(cfg.train.seed, 0, epoch))[positions[chosen] % size]
    pixels = images[index.to(images.device)].to(device, non_blocking=True)
    if cfg.data.flip:
        flips = (torch.rand(batch, generator=_seeded(cfg.train.seed, 1, step, rank)) < 0.5).to(device)
        pixels = torch.where(flips.view(-1, 1, 1, 1), pixels.flip(-1), pixels)
    return pixels.float() / 127.5 - 1.0


def _masks(step: int, rank: int, cfg: Config, device) -> torch.Tensor:
    """One mask per sample, its kind drawn from cfg.data.masks: float (B, 1, R, R), 1 = hole."""
    generator = _seeded(cfg.train.seed, 2, step, rank)
    batch, size, kinds = cfg.train.batch_size, cfg.model.resolution, cfg.data.masks
    choice = torch.randint(len(kinds), (batch,), generator=generator)
    masks = torch.empty(batch, 1, size, size, device=device)
    for number, kind in enumerate(kinds):
        chosen = (choice == number).nonzero().flatten()
        if len(chosen):
            masks[chosen.to(device)] = torch_masks(kind, len(chosen), size, generator, device)
    return masks


@torch.no_grad()
def validate(generator: nn.Module, images: torch.Tensor, masks: torch.Tensor, device, batch_size: int) -> dict:
    """Hole L1 and hole PSNR of the composited output on the fixed validation subset."""
    outputs = []
    for start in range(0, len(images), batch_size):
        real = images[start : start + batch_size].to(device).float() / 127.5 - 1.0
        mask = masks[start : start + batch_size].to(device)
        outputs.append(generator(real * (1 - mask), mask)[1].float().cpu())
    real = images.float() / 127.5 - 1.0
    return hole_metrics(torch.cat(outputs), real, masks)


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


def _hardware(device: torch.device, world: int) -> str:
    if device.type == "cuda":
        return f"{world} x {torch.cuda.get_device_name(device)}"
    return f"{world} x CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def train(cfg: Config, resume: str | Path | None = None, max_minutes: float | None = None) -> TrainResult:
    """Train the generator and discriminator of `cfg`; write logs, samples and checkpoints into a run dir.

    Args:
        cfg: the experiment (see config.py and configs/).
        resume: a run dir (its latest checkpoint) or a checkpoint file to continue from, in its own run dir.
        max_minutes: save and stop after this much wall time (also on SIGTERM / SIGINT).
    Returns:
        The run dir, the last step and the EMA generator.
    """
    rank, world, device = _distributed()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.bf16 and device.type == "cuda")
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    started = time.monotonic()

    # Build data.
    if not cfg.data.train:
        raise InpaintError("data.train is empty: give a .flist, folder or .zip of training images")
    train_images = load_uint8(cfg.data.train, cfg.model.resolution, cfg.data.workers)
    if cfg.data.resident:
        train_images = train_images.to(device)
    val_images = val_masks = None
    if cfg.data.val and rank == 0:
        val_images = load_uint8(cfg.data.val, cfg.model.resolution, cfg.data.workers)[: cfg.train.val_images]
        val_masks = torch.from_numpy(mask_set("deepfill", len(val_images), cfg.model.resolution, seed=0))
        val_masks = val_masks[:, None].float()

    # Build networks.
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    generator = ARCHITECTURES[cfg.model.arch](width=cfg.model.width).to(device, memory_format=memory_format)
    discriminator = SNPatchGAN(width=cfg.model.discriminator_width).to(device, memory_format=memory_format)
    ema = copy.deepcopy(generator).eval().requires_grad_(False)
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=cfg.train.lr, betas=cfg.train.betas)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.train.lr, betas=cfg.train.betas)
    start_step, wall_before = 0, 0.0
    if resume is not None:
        checkpoint = find_checkpoint(resume)
        state = load_checkpoint(checkpoint)
        try:
            generator.load_state_dict(state["generator"])
            discriminator.load_state_dict(state["discriminator"])
            ema.load_state_dict(state["ema"])
        except RuntimeError as error:
            raise InpaintError(
                f"checkpoint {checkpoint} does not fit this config's model: {str(error)[:200]}"
            ) from None
        if "optimizer_g" in state:
            optimizer_g.load_state_dict(state["optimizer_g"])
            optimizer_d.load_state_dict(state["optimizer_d"])
        else:  # a slimmed checkpoint (e.g. the fp16 one kept in the repo): the networks, not Adam's moments
            warnings.warn(f"{checkpoint} holds no optimiser state: Adam starts afresh", stacklevel=2)
        if "rng_cpu" in state:  # every draw of the loop is seeded by step; this restores anything else
            torch.set_rng_state(state["rng_cpu"])
        start_step, wall_before = state["step"], state.get("wall_seconds", 0.0)
        run_dir = run_dir_of(checkpoint)
    elif rank == 0:
        run_dir = _new_run_dir(Path(cfg.train.run_root), cfg.name)
    if world > 1 and resume is None:  # every rank learns rank 0's new run dir
        shared = [str(run_dir) if rank == 0 else None]
        dist.broadcast_object_list(shared, src=0)
        run_dir = Path(shared[0])
    generator_train = DistributedDataParallel(generator) if world > 1 else generator
    discriminator_train = DistributedDataParallel(discriminator) if world > 1 else discriminator
    if cfg.train.compile:
        generator_train, discriminator_train = torch.compile(generator_train), torch.compile(discriminator_train)

    writer = None
    if rank == 0:
        (run_dir / "config.yaml").write_text(dump_config(cfg))
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            warnings.warn(
                "tensorboard is not installed (pip install faceinpaint[train]): no event files", stacklevel=2
            )

    def log(record: dict) -> None:
        with open(run_dir / "metrics.jsonl", "a") as stream:
            stream.write(json.dumps(record) + "\n")
        if writer is not None:
            for key, value in record.items():
                if key not in ("kind", "step") and isinstance(value, (int, float)):
                    writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def save(step: int) -> None:
        state = {
            "step": step,
            "config": cfg.to_dict(),
            "generator": generator.state_dict(),
            "discriminator": discriminator.state_dict(),
            "ema": ema.state_dict(),
            "optimizer_g": optimizer_g.state_dict(),
            "optimizer_d": optimizer_d.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "wall_seconds": wall_before + time.monotonic() - started,
            "world_size": world,
            "hardware": _hardware(device, world),
        }
        save_checkpoint(state, checkpoint_path(run_dir, step))
        prune_checkpoints(run_dir, cfg.train.keep_checkpoints, cfg.train.keep_every)

    step = start_step
    sums = torch.zeros(4, device=device)  # d, g_adv, l1_coarse, l1_refined: summed on the device, no sync per step
    last_time, last_step = time.monotonic(), start_step
    bar = tqdm(total=cfg.train.max_steps, initial=start_step, disable=None if rank == 0 else True, file=sys.stderr)
    with _StopSignal() as stop:
        while step < cfg.train.max_steps:
            real = _batch(train_images, step, rank, world, cfg, device).contiguous(memory_format=memory_format)
            mask = _masks(step, rank, cfg, device)

            # Discriminator step: real and completed images in one batch (one forward per step under DDP).
            with autocast:
                coarse, refined = generator_train(real, mask)
                completed = refined * mask + real * (1.0 - mask)
                scores = discriminator_train(torch.cat([real, completed.detach()]), torch.cat([mask, mask]))
                loss_d = hinge_discriminator(*scores.chunk(2))
            optimizer_d.zero_grad(set_to_none=True)
            loss_d.backward()
            optimizer_d.step()

            # Generator step: the bare discriminator, frozen, so DDP syncs no gradient it does not need.
            discriminator.requires_grad_(False)
            with autocast:
                loss_adv = hinge_generator(discriminator(completed, mask))
                loss_coarse, loss_refined = l1(coarse, real), l1(refined, real)
                loss_g = (
                    cfg.train.l1_coarse * loss_coarse + cfg.train.l1_refined * loss_refined + cfg.train.gan * loss_adv
                )
            optimizer_g.zero_grad(set_to_none=True)
            loss_g.backward()
            optimizer_g.step()
            discriminator.requires_grad_(True)

            # Update EMA.
            with torch.no_grad():
                for averaged, current in zip(ema.parameters(), generator.parameters(), strict=True):
                    averaged.lerp_(current, 1.0 - cfg.train.ema)
            sums += torch.stack([loss_d, loss_adv, loss_coarse, loss_refined]).detach()
            step += 1
            bar.update(1)

            # Log, sample, validate, save.
            out_of_time = max_minutes is not None and time.monotonic() - started > 60.0 * max_minutes
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
                means = (sums / max(1, step - last_step)).tolist()
                record = {"kind": "train", "step": step, "loss_d": means[0], "loss_g_adv": means[1],
                          "l1_coarse": means[2], "l1_refined": means[3], "lr": cfg.train.lr,
                          "it_per_s": (step - last_step) / max(now - last_time, 1e-9)}  # fmt: skip
                if device.type == "cuda":
                    record["gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                log(record)
                bar.set_postfix(l1=f"{means[3]:.4f}", d=f"{means[0]:.3f}")
                eta = (cfg.train.max_steps - step) / max(record["it_per_s"], 1e-9)
                with open(run_dir / "log.txt", "a") as stream:
                    stream.write(f"step {step} " + " ".join(f"{k}={v:.4g}" for k, v in list(record.items())[2:])
                                 + f" eta={eta / 3600:.2f}h\n")  # fmt: skip
                sums.zero_()
                last_time, last_step = now, step
            if step % cfg.train.sample_every == 0:
                grid = save_grid(real, mask, coarse, refined, run_dir / "samples" / f"step-{step:07d}.png")
                if writer is not None:
                    writer.add_image("samples", grid, step, dataformats="HWC")
            if val_images is not None and (step % cfg.train.val_every == 0 or step == cfg.train.max_steps):
                log(
                    {"kind": "val", "step": step, **validate(ema, val_images, val_masks, device, cfg.train.batch_size)}
                )
            if step % cfg.train.save_every == 0 or stopping or step == cfg.train.max_steps:
                save(step)
            if stopping:
                reason = stop.received or f"--max-minutes {max_minutes}"
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
