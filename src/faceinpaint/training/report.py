"""Rank 0's record of a training run: loss means in metrics.jsonl, TensorBoard and log.txt, sample grids and
validation scores, each at the interval its config names (train.log_every, sample_every, val_every)."""

import json
import time
from pathlib import Path

import torch
from torch import nn

from faceinpaint.config import Config
from faceinpaint.training.batches import validate
from faceinpaint.training.figures import save_grid
from faceinpaint.training.setup import open_writer
from faceinpaint.training.step import Batch


class RunReport:
    """Sums each loss term between log lines (on the device: no sync per step) and writes what a step is due."""

    def __init__(self, run_dir: Path, cfg: Config, device: torch.device, val_set, start_step: int, in_run: bool):
        self.run_dir, self.cfg, self.device, self.val_set = run_dir, cfg, device, val_set
        self.writer = open_writer(run_dir, cfg, start_step, in_run)
        self.sums, self.counts = {}, {}
        self.last_time, self.last_step = time.monotonic(), start_step

    def add(self, terms: dict) -> None:
        for name, value in terms.items():  # a term may start mid-interval (train.gan_start_step)
            self.sums[name] = self.sums.get(name, 0.0) + value.detach().float()
            self.counts[name] = self.counts.get(name, 0) + 1

    def log(self, record: dict) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as stream:
            stream.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("kind", "step") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def after_step(self, step: int, last: bool, batch: Batch, coarse, refined, ema: nn.Module, bar) -> None:
        """Log, sample and validate as `step` is due; `last`: the run stops after this step."""
        train = self.cfg.train
        if step % train.log_every == 0 or last:
            self._log_losses(step, bar)
        if step % train.sample_every == 0:
            path = self.run_dir / "samples" / f"step-{step:07d}.png"
            grid = save_grid(batch.real, batch.mask, coarse, refined, path, reference=batch.guide.get("reference"))
            if self.writer is not None:
                self.writer.add_image("samples", grid, step, dataformats="HWC")
        if self.val_set is not None and (step % train.val_every == 0 or step == train.max_steps):
            scores = validate(ema, self.val_set, self.device, train.batch_size)
            self.log({"kind": "val", "step": step, "resolution": self.cfg.model.resolution, **scores})

    def _log_losses(self, step: int, bar) -> None:
        now = time.monotonic()
        values = torch.stack(list(self.sums.values())).tolist()
        means = {name: value / self.counts[name] for name, value in zip(self.sums, values, strict=True)}
        record = {"kind": "train", "step": step, **means, "lr": self.cfg.train.lr,
                  "it_per_s": (step - self.last_step) / max(now - self.last_time, 1e-9)}  # fmt: skip
        if self.device.type == "cuda":
            record["gpu_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.log(record)
        bar.set_postfix(l1=f"{means['l1_refined']:.4f}", d=f"{means.get('loss_d', 0.0):.3f}")
        eta = (self.cfg.train.max_steps - step) / max(record["it_per_s"], 1e-9)
        with open(self.run_dir / "log.txt", "a") as stream:
            stream.write(f"step {step} " + " ".join(f"{k}={v:.4g}" for k, v in list(record.items())[2:])
                         + f" eta={eta / 3600:.2f}h\n")  # fmt: skip
        self.sums, self.counts = {}, {}
        self.last_time, self.last_step = now, step

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
