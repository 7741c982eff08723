"""Profile one DeepFillv2 training step on the CPU: milliseconds, FLOPs and GFLOP/s per phase, as a markdown table.

The step is the one `faceinpaint.training.loop.train` runs for `configs/deepfillv2_face-256.yaml` (generator forward, a
discriminator step on real + completed images, a generator step with L1 on both stages and the optional terms,
Adam, EMA), built from the project's own networks and loss functions on generated images. Each phase is a
`torch.profiler.record_function` range (generator stages through module hooks); the backward pass is split over the
phases by autograd's sequence numbers (each backward node carries the number of the forward op that made it), and
FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` in one more step, attributed the same way. The
reference is the machine's fp32 peak: the best of a few 2048 x 2048 matmuls on the same threads.

Run: nice -n 19 .venv/bin/python benchmarks/train_profile.py [--size 256] [--batch 4] [--steps 2]
     [--losses gan,matching,stlpips,dlib] [--threads 2] [--layout channels_last|contiguous] [--adam loop|fused]
     [--models COMMIT (the generator as committed there, e.g. HEAD before a change)]
"""

import argparse
import bisect
import contextlib
import copy
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

from faceinpaint.config import load_config
from faceinpaint.models import DeepFillV2, SNPatchGAN
from faceinpaint.training.batches import masks
from faceinpaint.training.losses import dlib_feature_loss, feature_matching, hinge_discriminator, hinge_generator, l1

ROOT = Path(__file__).resolve().parent.parent
MODEL_MODULES = ("layers", "deepfill", "twoface")  # in import order: each imports the ones before it
LOSSES = ("gan", "matching", "stlpips", "dlib")  # the optional terms --losses can switch on
# Generator submodules -> the phase their forward (and, through sequence numbers, their backward) belongs to.
GENERATOR_PHASES = {
    "coarse": "G coarse stage",
    "refine_conv": "G refinement dilated branch",
    "refine_attention_encoder": "G attention branch convs",
    "attention": "G contextual attention",
    "refine_attention_decoder": "G attention branch convs",
    "refine_decoder": "G refinement decoder",
}
ENGINE = "backward: grad accumulation, engine"
ROWS = [
    "G coarse stage",
    "G refinement dilated branch",
    "G attention branch convs",
    "G contextual attention",
    "G refinement decoder",
    "G other (mask, paste, tanh)",
    "D step (fwd + bwd on real + completed)",
    "D in G step (fwd + bwd to the image)",
    "L1, hinge, matching",
    "ST-LPIPS",
    "dlib features",
    ENGINE,
    "optimiser D",
    "optimiser G",
    "EMA",
]


def _sequence_number() -> int:
    """The autograd sequence counter now: every node made from here on gets a larger number."""
    with torch.enable_grad():
        return torch.zeros((), requires_grad=True).mul(1.0).grad_fn._sequence_nr()


class Phases:
    """Named ranges of a step: a profiler range each, and the span of autograd sequence numbers made inside it
    (for attributing backward ops), innermost range first."""

    def __init__(self):
        self.stack, self.spans = [], []  # spans: (first sequence number, last + 1, name)

    @contextlib.contextmanager
    def __call__(self, name: str):
        self.enter(name)
        try:
            yield
        finally:
            self.exit()

    def enter(self, name: str) -> None:
        scope = record_function(name)
        scope.__enter__()
        self.stack.append((name, scope, _sequence_number()))

    def exit(self) -> None:
        name, scope, first = self.stack.pop()
        self.spans.append((first, _sequence_number(), name))
        scope.__exit__(None, None, None)

    def current(self) -> str | None:
        return self.stack[-1][0] if self.stack else None

    def of_sequence(self, number: int) -> str | None:
        """The innermost range whose forward made the autograd node with this sequence number."""
        if not hasattr(self, "_sorted"):
            self._sorted = sorted(self.spans)
            self._starts = [span[0] for span in self._sorted]
        best = None
        for first, last, name in self._sorted[: bisect.bisect_right(self._starts, number)]:
            if first <= number < last and (best is None or first >= best[0]):
                best = (first, name)
        return best[1] if best else None

    def reset(self) -> None:
        self.spans = []
        self.__dict__.pop("_sorted", None)


def _module_from_source(name: str, source: str, origin: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = origin
    exec(compile(source, origin, "exec"), module.__dict__)
    return module


def architectures_at(commit: str) -> dict:
    """The ARCHITECTURES registry with the model modules as they were at `commit` (the rest of the package as now)."""
    names = [f"faceinpaint.models.{name}" for name in MODEL_MODULES]
    loaded, saved = {}, {name: sys.modules[name] for name in names}
    try:
        for name in MODEL_MODULES:  # each sees the earlier ones of the same commit when it imports them
            path = f"src/faceinpaint/models/{name}.py"
            source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True,
                                    check=True).stdout  # fmt: skip
            loaded[name] = _module_from_source(f"faceinpaint.models.{name}", source, f"{commit}:{path}")
            sys.modules[f"faceinpaint.models.{name}"] = loaded[name]
    finally:
        sys.modules.update(saved)
    return {"deepfillv2": loaded["deepfill"].DeepFillV2, "twoface": loaded["twoface"].TwoFace}


def hook_generator(generator: nn.Module, phases: Phases) -> None:
    """Open a phase around each of the generator's stages (module forward hooks)."""
    for name, phase in GENERATOR_PHASES.items():
        module = getattr(generator, name)
        module.register_forward_pre_hook(lambda *_, phase=phase: phases.enter(phase))
        module.register_forward_hook(lambda *_: phases.exit())


class PhaseFlops(FlopCounterMode):
    """FlopCounterMode that also books every counted op on the current phase; in backward, on the phase whose
    forward made the running autograd node."""

    def __init__(self, phases: Phases):
        super().__init__(display=False)
        self.phases, self.by_phase = phases, {}

    def _count_flops(self, func_packet, out, args, kwargs):
        if func_packet in self.flop_registry:
            count = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
            node = torch._C._current_autograd_node()
            phase = self.phases.of_sequence(node._sequence_nr()) if node is not None else self.phases.current()
            self.by_phase[phase] = self.by_phase.get(phase, 0) + count
        return super()._count_flops(func_packet, out, args, kwargs)


def build(args: argparse.Namespace) -> dict:
    """The networks, optimisers and loss networks of training/loop.py's deepfillv2 recipe at --size / --width."""
    layout = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format
    torch.manual_seed(0)
    generator_class = architectures_at(args.models)["deepfillv2"] if args.models else DeepFillV2
    nets = {"generator": generator_class(width=args.width).to(memory_format=layout)}
    nets["discriminator"] = SNPatchGAN(width=64).to(memory_format=layout)
    nets["ema"] = copy.deepcopy(nets["generator"]).eval().requires_grad_(False)
    fused = args.adam == "fused"
    nets["optimizer_g"] = torch.optim.Adam(nets["generator"].parameters(), lr=1e-4, betas=(0.5, 0.999), fused=fused)
    nets["optimizer_d"] = torch.optim.Adam(nets["discriminator"].parameters(), lr=1e-4, betas=(0.5, 0.999),
                                           fused=fused)  # fmt: skip
    if "stlpips" in args.losses:
        from faceinpaint.models.perceptual import STLPIPS

        nets["stlpips"] = STLPIPS.from_package().requires_grad_(False)
    if "dlib" in args.losses:
        from faceinpaint.models.dlib_resnet import DlibResNet

        nets["dlib"] = DlibResNet.from_package()
    nets["layout"] = layout
    return nets


def step(nets: dict, real: torch.Tensor, mask: torch.Tensor, losses: set, phase: Phases, number: int) -> None:
    """One training step, in training/loop.py's order, each phase in its own range."""
    generator, discriminator = nets["generator"], nets["discriminator"]
    with phase("G other (mask, paste, tanh)"):
        coarse, refined = generator(real, mask)
        completed = refined * mask + real * (1.0 - mask)
    if "gan" in losses:
        with phase("D step (fwd + bwd on real + completed)"):
            layers = discriminator(torch.cat([real, completed.detach()]), torch.cat([mask, mask]), features=True)
            loss_d = hinge_discriminator(*layers[-1].chunk(2))
            real_features = [layer.chunk(2)[0].detach() for layer in layers[:-1]]
            nets["optimizer_d"].zero_grad(set_to_none=True)
            loss_d.backward()
        with phase("optimiser D"):
            nets["optimizer_d"].step()
    discriminator.requires_grad_(False)
    with phase("L1, hinge, matching"):
        loss_g = l1(coarse, real) + l1(refined, real)
    if "gan" in losses:
        with phase("D in G step (fwd + bwd to the image)"):
            layers = discriminator(completed, mask, features=True)
        with phase("L1, hinge, matching"):
            loss_g = loss_g + hinge_generator(layers[-1])
            if "matching" in losses:
                loss_g = loss_g + feature_matching(real_features, layers[:-1])
    if "stlpips" in losses:
        with phase("ST-LPIPS"):
            loss_g = loss_g + nets["stlpips"].distance(completed, real).mean()
    if "dlib" in losses:
        with phase("dlib features"):
            loss_g = loss_g + dlib_feature_loss(nets["dlib"], completed, real)
    with phase("generator backward"):
        nets["optimizer_g"].zero_grad(set_to_none=True)
        loss_g.backward()
    with phase("optimiser G"):
        nets["optimizer_g"].step()
    discriminator.requires_grad_(True)
    with phase("EMA"), torch.no_grad():
        decay = min(0.999, (1.0 + number) / (10.0 + number))
        for averaged, current in zip(nets["ema"].parameters(), generator.parameters(), strict=True):
            averaged.lerp_(current, 1.0 - decay)


def batch(args: argparse.Namespace, number: int, layout) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images in [-1, 1] and the recipe's masks (deepfill / lama-medium / lama-thick) for a step."""
    generator = torch.Generator().manual_seed(number)
    small = torch.rand(args.batch, 3, args.size // 8, args.size // 8, generator=generator) * 2 - 1
    real = nn.functional.interpolate(small, size=(args.size, args.size), mode="bilinear")
    cfg = load_config(
        "configs/deepfillv2_face-256.yaml", [f"model.resolution={args.size}", f"train.batch_size={args.batch}"]
    )
    return real.contiguous(memory_format=layout), masks(number, 0, cfg, "cpu")


def peak_gflops(threads: int, size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best matmul rate on `threads` threads (fp32 unless `dtype` says otherwise, e.g. bf16 on a CPU with AMX): the
    reference for what the convolutions could reach."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def attribute(prof, phases: Phases, steps: int) -> tuple[dict, dict, float]:
    """(forward ms per phase, backward ms per phase, step wall ms), per step, from the profiler's events."""
    own, inside, backward, names = {}, {}, {}, set(ROWS) | {"generator backward"}
    events = prof.events()
    for event in events:
        if event.name in names:  # a range's own time: its length less that of the ranges nested in it
            inner = sum(c.time_range.elapsed_us() for c in event.cpu_children if c.name in names)
            own[event.name] = own.get(event.name, 0.0) + event.time_range.elapsed_us() - inner
        elif event.name.startswith("autograd::engine::evaluate_function:"):
            container = event.cpu_parent
            while container is not None and container.name not in names:
                container = container.cpu_parent
            if container is not None:
                inside[container.name] = inside.get(container.name, 0.0) + event.time_range.elapsed_us()
            owner = phases.of_sequence(event.sequence_nr) if "AccumulateGrad" not in event.name else None
            owner = owner if owner in ROWS else ENGINE
            backward[owner] = backward.get(owner, 0.0) + event.time_range.elapsed_us()
    # What the backward calls' ranges hold beyond their nodes is the engine's; the D step's range holds its backward.
    forward = {name: time - inside.get(name, 0.0) for name, time in own.items()}
    backward[ENGINE] = backward.get(ENGINE, 0.0) + forward.pop("generator backward", 0.0)
    wall = max(e.time_range.end for e in events if e.name in names) - min(
        e.time_range.start for e in events if e.name in names
    )
    scale = 1e-3 / steps
    return {k: v * scale for k, v in forward.items()}, {k: v * scale for k, v in backward.items()}, wall * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--steps", type=int, default=2, help="profiled steps, after --warmup")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--losses", default=",".join(LOSSES), help=f"optional terms on, of {','.join(LOSSES)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layout", choices=["channels_last", "contiguous"], default="channels_last")
    parser.add_argument("--adam", choices=["loop", "fused"], default="loop", help="Adam's implementation")
    parser.add_argument("--models", help="profile the model modules as at this commit (default: the working tree)")
    args = parser.parse_args()
    args.losses = {name for name in args.losses.split(",") if name}
    if args.losses - set(LOSSES):
        parser.error(f"unknown --losses {sorted(args.losses - set(LOSSES))}; choose from {LOSSES}")
    torch.set_num_threads(args.threads)

    nets, phases = build(args), Phases()
    hook_generator(nets["generator"], phases)
    for number in range(args.warmup):
        step(nets, *batch(args, number, nets["layout"]), args.losses, phases, number)
    phases.reset()
    data = [batch(args, args.warmup + n, nets["layout"]) for n in range(args.steps)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for number, (real, mask) in enumerate(data):
            step(nets, real, mask, args.losses, phases, args.warmup + number)
    forward, backward, wall = attribute(prof, phases, args.steps)
    phases.reset()
    with PhaseFlops(phases) as counter:
        step(nets, *batch(args, 99, nets["layout"]), args.losses, phases, 99)
    total_flops = counter.get_total_flops()
    assert abs(sum(counter.by_phase.values()) - total_flops) < 1e-6 * total_flops, "FLOPs booked on no phase"
    peak = peak_gflops(args.threads)

    print(
        f"DeepFillv2 width {args.width} at {args.size}x{args.size}, batch {args.batch}, losses "
        f"{','.join(sorted(args.losses)) or 'L1 only'}, {args.layout}, {args.adam} Adam, models "
        f"{args.models or 'of the working tree'}, {args.threads} threads, torch "
        f"{torch.__version__}; mean of {args.steps} profiled steps after {args.warmup} warm-up"
    )
    print("| phase | forward ms | backward ms | total ms | share | GFLOP | GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    for row in ROWS:
        fwd, bwd = forward.get(row, 0.0), backward.get(row, 0.0)
        gflop = counter.by_phase.get(row, 0) / 1e9
        rate = f"{gflop / ((fwd + bwd) / 1e3):.1f}" if gflop and fwd + bwd > 0 else ""
        print(f"| {row} | {fwd:.0f} | {bwd:.0f} | {fwd + bwd:.0f} | {(fwd + bwd) / wall:.1%} | "
              f"{gflop:.1f} | {rate} |")  # fmt: skip
    between = wall - sum(forward.values()) - sum(backward.values())
    print(
        f"| between phases (Python, requires_grad_ toggles) | {between:.0f} | | {between:.0f} | "
        f"{between / wall:.1%} | | |"
    )
    print(
        f"| **step** | {sum(forward.values()):.0f} | {sum(backward.values()):.0f} | {wall:.0f} | 100% | "
        f"{total_flops / 1e9:.1f} | {total_flops / 1e9 / (wall / 1e3):.1f} |"
    )
    print(
        f"\n{args.batch / (wall / 1e3):.2f} images/s under the profiler; fp32 peak (2048^2 matmul, {args.threads} "
        f"threads): {peak:.0f} GFLOP/s, the step reaches {total_flops / 1e9 / (wall / 1e3) / peak:.0%} of it"
    )


if __name__ == "__main__":
    sys.exit(main())
