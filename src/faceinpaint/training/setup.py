"""What the training loop (loop.py) is built from: the precision, the networks and their optimisers, the views a
step runs (DDP, compiled), a resumed checkpoint, the run dir and its TensorBoard writer. Each piece is a function
of the config, so the loop reads as one story."""

import copy
import json
import os
import platform
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from faceinpaint.config import Config, dump_config
from faceinpaint.data.mask_batches import face_parts_region
from faceinpaint.errors import InpaintError
from faceinpaint.models import ARCHITECTURES, SNPatchGAN
from faceinpaint.training.checkpoint import (
    checkpoint_path,
    in_run_dir,
    load_resumable,
    prune_checkpoints,
    remove_stale_temporaries,
    run_dir_of,
    save_checkpoint,
    truncate_metrics,
    warm_start,
)


def distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the torchrun process group when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def hardware(device: torch.device, world: int) -> str:
    if device.type == "cuda":
        return f"{world} x {torch.cuda.get_device_name(device)}"
    return f"{world} x CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX). Without, oneDNN emulates it: a training
    step at 128 took 40x longer than in float32 on an AVX2-only EPYC."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None) or all(probe is None for probe in probes)


def precision(cfg: Config, device: torch.device):
    """The step's autocast context (bf16 where the config asks and the hardware has it) and memory format."""
    bf16 = cfg.train.bf16 and (device.type == "cuda" or cfg.train.cpu_bf16)
    if bf16 and device.type == "cpu" and not cpu_has_bf16():
        warnings.warn("train.cpu_bf16: this CPU has no AVX512-BF16 or AMX, so it trains in float32", stacklevel=3)
        bf16 = False
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    return autocast, torch.channels_last if cfg.train.channels_last else torch.contiguous_format


@dataclass
class Networks:
    """The trained networks (generator, SN-PatchGAN, the optional local one, the EMA generator) and the frozen
    loss networks a config asks for (dlib's face ResNet, ST-LPIPS, the face-part region)."""

    generator: nn.Module
    discriminator: nn.Module
    local: nn.Module | None
    ema: nn.Module
    identity_network: nn.Module | None
    stlpips: nn.Module | None
    parts_region: torch.Tensor | None

    @property
    def discriminators(self) -> list[nn.Module]:
        return [self.discriminator] + ([self.local] if self.local is not None else [])


def build_networks(cfg: Config, device: torch.device, memory_format, warm: bool, rank: int) -> Networks:
    """The networks of `cfg` on `device`, seeded alike on every rank; `warm`: start the generator from
    train.init_from (a fresh run; a resumed one already holds its once warm-started weights)."""
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    generator = ARCHITECTURES[cfg.model.arch](**cfg.model_args()).to(device, memory_format=memory_format)
    discriminator = SNPatchGAN(width=cfg.model.discriminator_width).to(device, memory_format=memory_format)
    # The local discriminator judges a square crop around the hole, resized to half the resolution (the seed's
    # local + global pair); it shares the global one's optimiser and is saved under its own key.
    local = None
    if cfg.train.local_gan > 0:
        local = SNPatchGAN(width=cfg.model.discriminator_width).to(device, memory_format=memory_format)
    # Frozen loss networks, not part of the generator: dlib's face ResNet (identity and its stage features) and
    # ST-LPIPS's AlexNet.
    identity_network = stlpips = None
    if cfg.train.identity_weight > 0 or cfg.train.dlib_feature_weight > 0:
        from faceinpaint.models.dlib_resnet import DlibResNet

        identity_network = DlibResNet.from_package().to(device)
    if cfg.train.stlpips_weight > 0:
        from faceinpaint.models.perceptual import STLPIPS

        stlpips = STLPIPS.from_package(device).requires_grad_(False)
    parts_region = face_parts_region(cfg.model.resolution, device) if cfg.train.part_l1_weight > 0 else None
    if cfg.train.init_from and warm:
        copied = warm_start(generator, cfg.train.init_from)
        if rank == 0:
            print(f"faceinpaint: generator starts from {cfg.train.init_from} ({copied} tensors)", file=sys.stderr)
    ema = copy.deepcopy(generator).eval().requires_grad_(False)
    return Networks(generator, discriminator, local, ema, identity_network, stlpips, parts_region)


def generator_groups(generator: nn.Module, cfg: Config) -> list[dict]:
    """Adam's parameter groups of the generator: all in one, or (train.reference_lr_scale != 1) the reference
    branch of a twoface model in a second group at lr x that scale."""
    branch_names = getattr(generator, "REFERENCE_MODULES", ())
    if cfg.train.reference_lr_scale == 1.0 or not branch_names:
        return [{"params": list(generator.parameters()), "lr": cfg.train.lr}]
    inherited, branch = [], []
    for name, parameter in generator.named_parameters():
        (branch if name.split(".")[0] in branch_names else inherited).append(parameter)
    return [
        {"params": inherited, "lr": cfg.train.lr},
        {"params": branch, "lr": cfg.train.lr * cfg.train.reference_lr_scale},
    ]


@dataclass
class TrainingViews:
    """What a step calls: the trained networks, wrapped in DDP when distributed and compiled when asked. The bare
    networks (Networks) are what is saved, averaged and, frozen, what judges the generator."""

    generator: nn.Module
    discriminator: nn.Module
    local: nn.Module | None


def training_views(nets: Networks, cfg: Config, world: int) -> TrainingViews:
    def wrap(network: nn.Module | None) -> nn.Module | None:
        if network is None:
            return None
        network = DistributedDataParallel(network) if world > 1 else network
        return torch.compile(network) if cfg.train.compile else network

    return TrainingViews(wrap(nets.generator), wrap(nets.discriminator), wrap(nets.local))


@dataclass
class Optimizers:
    generator: torch.optim.Optimizer
    discriminator: torch.optim.Optimizer  # the global and the local discriminator's parameters
    groups: list[dict]  # the generator's parameter groups as the config makes them (generator_groups)
    fused: bool


def build_optimizers(nets: Networks, cfg: Config, device: torch.device) -> Optimizers:
    groups = generator_groups(nets.generator, cfg)
    # Adam's fused kernel: one pass per tensor instead of a dozen ops (the CPU has one from torch 2.4 on). The 256
    # generator's step on a busy 2-core CPU: 87 ms as a loop, 25 ms fused (0.95 s and 0.33 s under the profiler).
    fused = device.type == "cuda" or torch.__version__ >= (2, 4)
    optimizer_g = torch.optim.Adam(groups, lr=cfg.train.lr, betas=cfg.train.betas, fused=fused)
    optimizer_d = torch.optim.Adam([p for d in nets.discriminators for p in d.parameters()], lr=cfg.train.lr,
                                   betas=cfg.train.betas, fused=fused)  # fmt: skip
    return Optimizers(optimizer_g, optimizer_d, groups, fused)


def resume_from(resume: str | Path, nets: Networks, optimizers: Optimizers, cfg: Config) -> tuple[Path, dict]:
    """Load a run dir's newest checkpoint that loads (or a checkpoint file) into the networks and optimisers,
    and restore the CPU RNG; -> (the checkpoint's path, its state)."""
    checkpoint, state = load_resumable(resume)
    try:
        nets.generator.load_state_dict(state["generator"])
        nets.ema.load_state_dict(state["ema"])
        # A slim checkpoint leaves out discriminators its run never trained: those start from their init.
        for network, key in ((nets.discriminator, "discriminator"), (nets.local, "local_discriminator")):
            if network is not None and key in state:
                network.load_state_dict(state[key])
    except (RuntimeError, KeyError) as error:
        raise InpaintError(f"checkpoint {checkpoint} does not fit this config's model: {str(error)[:200]}") from None
    if "optimizer_g" in state:
        _load_optimizers(checkpoint, state, optimizers, cfg)
    else:  # a slimmed checkpoint (e.g. the fp16 one kept in the repo): the networks, not Adam's moments
        warnings.warn(f"{checkpoint} holds no optimiser state: Adam starts afresh", stacklevel=3)
    if "rng_cpu" in state:  # every draw of the loop is seeded by step; this restores anything else
        torch.set_rng_state(state["rng_cpu"])
    return checkpoint, state


def _load_optimizers(checkpoint: Path, state: dict, optimizers: Optimizers, cfg: Config) -> None:
    saved_groups = len(state["optimizer_g"]["param_groups"])
    if saved_groups != len(optimizers.groups):
        raise InpaintError(
            f"checkpoint {checkpoint}: its optimiser has {saved_groups} parameter group(s), this config "
            f"{len(optimizers.groups)} (train.reference_lr_scale): keep the run's value, or start a new run from "
            f"it with train.init_from"
        )
    for saved in (state["optimizer_g"], state["optimizer_d"]):  # else the checkpoint's own flag wins
        for group in saved["param_groups"]:
            group["fused"] = optimizers.fused
    optimizers.generator.load_state_dict(state["optimizer_g"])
    optimizers.discriminator.load_state_dict(state["optimizer_d"])
    # `--set train.lr=...` wins on resume
    for group, fresh in zip(optimizers.generator.param_groups, optimizers.groups, strict=True):
        group["lr"], group["betas"] = fresh["lr"], cfg.train.betas
    for group in optimizers.discriminator.param_groups:
        group["lr"], group["betas"] = cfg.train.lr, cfg.train.betas


def _new_run_dir(root: Path, name: str) -> Path:
    numbers = [int(p.name[:5]) for p in root.glob("[0-9][0-9][0-9][0-9][0-9]-*")] if root.is_dir() else []
    run_dir = root / f"{max(numbers, default=-1) + 1:05d}-{name}"
    run_dir.mkdir(parents=True)
    return run_dir


def choose_run_dir(cfg: Config, checkpoint: Path | None, state: dict, rank: int, world: int) -> tuple[Path, bool]:
    """(run dir, whether it continues the resumed run). A checkpoint inside a run dir continues that run; one kept
    elsewhere (the slim one in the repo) starts a new run dir that inherits its step count and metrics history,
    so the repo copy is never written to. Every rank gets rank 0's dir."""
    in_run = checkpoint is not None and in_run_dir(checkpoint)
    run_dir = None
    if in_run:
        run_dir = run_dir_of(checkpoint)
        if rank == 0:  # a killed run leaves temporary files, and logs of the steps this resume redoes
            remove_stale_temporaries(run_dir)
            truncate_metrics(run_dir, state["step"])
    elif rank == 0:
        run_dir = _new_run_dir(Path(cfg.train.run_root), cfg.name)
        if checkpoint is not None:
            history = "".join(json.dumps(record) + "\n" for record in state.get("metrics", []))
            (run_dir / "metrics.jsonl").write_text(history)
    if world > 1 and not in_run:  # every rank learns rank 0's new run dir
        shared = [str(run_dir) if rank == 0 else None]
        dist.broadcast_object_list(shared, src=0)
        run_dir = Path(shared[0])
    return run_dir, in_run


def open_writer(run_dir: Path, cfg: Config, start_step: int, in_run: bool):
    """Rank 0: write the run's config.yaml and open its TensorBoard writer (None without tensorboard)."""
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("tensorboard is not installed (pip install faceinpaint[train]): no event files", stacklevel=3)
        return None
    # Events after the resumed step are hidden, as metrics.jsonl's records are dropped.
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if in_run else None)


def save_state(run_dir: Path, step: int, cfg: Config, nets: Networks, optimizers: Optimizers, wall: float,
               world: int, device: torch.device) -> None:  # fmt: skip
    """Checkpoint every network, both optimisers and the RNG at `step`; prune old checkpoints."""
    state = {
        "step": step,
        "config": cfg.to_dict(),
        "generator": nets.generator.state_dict(),
        "discriminator": nets.discriminator.state_dict(),
        **({"local_discriminator": nets.local.state_dict()} if nets.local is not None else {}),
        "ema": nets.ema.state_dict(),
        "optimizer_g": optimizers.generator.state_dict(),
        "optimizer_d": optimizers.discriminator.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "wall_seconds": wall,
        "world_size": world,
        "hardware": hardware(device, world),
    }
    save_checkpoint(state, checkpoint_path(run_dir, step))
    prune_checkpoints(run_dir, cfg.train.keep_checkpoints, cfg.train.keep_every)
