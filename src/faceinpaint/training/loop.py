"""Main training loop: DeepFillv2 or Two-Face; L1 on both stages, hinge SN-PatchGAN(s), identity loss, EMA, DDP.

One process or many (`torchrun --nproc_per_node N -m faceinpaint.cli train CONFIG`) take the same path; rank 0
does all I/O. Every random draw of a step (its images, flips, masks and references) is derived from
(seed, step, rank) in training/batches.py, so a resumed run sees exactly the batches the uninterrupted run would see.

Two-Face (arch twoface) adds: a reference per sample, another photo of the same person (never the image itself),
dropped with probability `train.reference_dropout` through the generator's per-sample `has_reference` flag; a
local discriminator on a square crop around the hole (`train.local_gan`); and dlib's identity loss to the ground
truth and to the reference (`train.identity_weight`). Each term is skipped when its weight is 0.
"""

import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from faceinpaint.config import Config
from faceinpaint.errors import InpaintError
from faceinpaint.training.report import RunReport
from faceinpaint.training.setup import (
    build_networks,
    build_optimizers,
    choose_run_dir,
    distributed,
    precision,
    resume_from,
    save_state,
    training_views,
)
from faceinpaint.training.step import make_batch, optimise_step, training_data, update_ema


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


class _Budget:
    """The run's time limits: wall minutes (--max-minutes) and this process's CPU minutes (--max-cpu-minutes)."""

    def __init__(self, max_minutes: float | None, max_cpu_minutes: float | None):
        self.max_minutes, self.max_cpu_minutes = max_minutes, max_cpu_minutes
        self.started, self.cpu_started = time.monotonic(), time.process_time()

    def wall(self) -> float:
        return time.monotonic() - self.started

    def spent(self) -> bool:
        over = self.max_minutes is not None and self.wall() > 60.0 * self.max_minutes
        return over or (self.max_cpu_minutes is not None
                        and time.process_time() - self.cpu_started > 60.0 * self.max_cpu_minutes)  # fmt: skip

    def reason(self, signal_name: str | None) -> str:
        if signal_name is not None:
            return signal_name
        return f"--max-minutes {self.max_minutes}" if self.max_minutes is not None else (
            f"--max-cpu-minutes {self.max_cpu_minutes}")  # fmt: skip


def _agreed(stopping: bool, step: int, world: int, device: torch.device) -> bool:
    """Whether every rank stops after `step`: ranks must stop together (or DDP hangs), and agree every 10 steps
    to spare a sync per step."""
    if world == 1:
        return stopping
    flag = torch.tensor([float(stopping)], device=device)
    if step % 10 == 0:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return step % 10 == 0 and bool(flag.item())


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
    autocast, memory_format = precision(cfg, device)
    budget = _Budget(max_minutes, max_cpu_minutes)
    if not cfg.data.train:
        raise InpaintError("data.train is empty: give a .flist, folder or .zip of training images")
    data = training_data(cfg, device, rank)

    # Networks and optimisers; resume; the run dir; rank 0's report.
    nets = build_networks(cfg, device, memory_format, warm=resume is None, rank=rank)
    optimizers = build_optimizers(nets, cfg, device)
    checkpoint, state = resume_from(resume, nets, optimizers, cfg) if resume is not None else (None, {})
    start_step, wall_before = state.get("step", 0), state.get("wall_seconds", 0.0)
    run_dir, in_run = choose_run_dir(cfg, checkpoint, state, rank, world)
    views = training_views(nets, cfg, world)
    report = RunReport(run_dir, cfg, device, data.val_set, start_step, in_run) if rank == 0 else None

    step, train_cfg = start_step, cfg.train
    bar = tqdm(total=train_cfg.max_steps, initial=start_step, disable=None if rank == 0 else True, file=sys.stderr)
    with _StopSignal() as stop:
        while step < train_cfg.max_steps:
            batch = make_batch(data, step, rank, world, cfg, device, memory_format)
            coarse, refined, terms = optimise_step(cfg, nets, optimizers, views, batch, step, autocast)
            update_ema(nets.ema, nets.generator, step, train_cfg.ema)
            step += 1
            bar.update(1)
            stopping = _agreed(stop.received is not None or budget.spent(), step, world, device)
            if report is not None:
                report.add(terms)
                last = stopping or step == train_cfg.max_steps
                report.after_step(step, last, batch, coarse, refined, nets.ema, bar)
                if step % train_cfg.save_every == 0 or last:
                    save_state(run_dir, step, cfg, nets, optimizers, wall_before + budget.wall(), world, device)
                if stopping:
                    print(f"faceinpaint: stopped at step {step} ({budget.reason(stop.received)}); "
                          f"resume with --resume {run_dir}", file=sys.stderr)  # fmt: skip
            if stopping:
                break
    bar.close()
    if report is not None:
        report.close()
    if world > 1:
        dist.barrier()
    return TrainResult(run_dir=run_dir, step=step, generator=nets.ema)
