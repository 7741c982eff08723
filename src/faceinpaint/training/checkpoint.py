"""Training state on disk (save, list, prune, load) and its export to a model dir with a filled-in model card."""

import json
import platform
import re
import warnings
from pathlib import Path

import torch

from faceinpaint.atomic import TEMPORARY_SUFFIX, atomic_write
from faceinpaint.config import dump_config, from_dict
from faceinpaint.errors import InpaintError
from faceinpaint.inpainter import Inpainter
from faceinpaint.weights import is_model_dir

CHECKPOINT_NAME = re.compile(r"step-(\d+)\.pt$")
# The model card's first sentence per architecture.
DESCRIPTIONS = {
    "deepfillv2": "DeepFillv2-style inpainting generator",
    "twoface": "Reference-guided (Two-Face) DeepFillv2-style inpainting generator; the reference photo is optional",
}


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:07d}.pt"


def save_checkpoint(state: dict, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a checkpoint is whole or absent."""
    with atomic_write(path) as stream:
        torch.save(state, stream)


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint of a run, oldest first."""
    folder = run_dir / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.pt") if (m := CHECKPOINT_NAME.search(p.name))]
    return sorted(found)


def prune_checkpoints(run_dir: Path, keep: int, keep_every: int) -> None:
    """Delete all but the last `keep` checkpoints, sparing multiples of `keep_every` (the progress figure's)."""
    found = list_checkpoints(run_dir)
    for step, path in found[: max(0, len(found) - keep)]:
        if not (keep_every and step % keep_every == 0):
            path.unlink(missing_ok=True)


def find_checkpoint(run_dir_or_file: str | Path) -> Path:
    """A checkpoint file as given, or the latest one of a run dir."""
    path = Path(run_dir_or_file)
    if path.is_file():
        return path
    if not path.is_dir():
        raise InpaintError(f"{path}: no such run dir or checkpoint")
    found = list_checkpoints(path)
    if not found:
        raise InpaintError(f"run dir {path} holds no checkpoint (checkpoints/step-*.pt)")
    return found[-1][1]


def load_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint (tensors and plain data only: weights_only loading)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise InpaintError(f"checkpoint {path}: cannot read it ({type(error).__name__}); is it complete?") from None


def load_resumable(run_dir_or_file: str | Path) -> tuple[Path, dict]:
    """The checkpoint to resume from and its state: a file as given, or the newest one of a run dir that loads.

    A run dir's unreadable checkpoints (cut short by a full disk, or written before writes were synced) are
    renamed to `*.pt.broken`, out of the way of listing and pruning, with a one-line warning each.
    """
    path = Path(run_dir_or_file)
    if not path.is_dir():
        checkpoint = find_checkpoint(path)
        return checkpoint, load_checkpoint(checkpoint)
    find_checkpoint(path)  # a clear error for a run dir without checkpoints
    for _, checkpoint in reversed(list_checkpoints(path)):
        try:
            return checkpoint, load_checkpoint(checkpoint)
        except InpaintError as error:
            broken = checkpoint.with_name(checkpoint.name + ".broken")
            try:
                checkpoint.replace(broken)
            except OSError:  # another rank of the same run moved it first
                pass
            warnings.warn(f"{error} Moved it to {broken.name}; resuming from an earlier checkpoint", stacklevel=2)
    raise InpaintError(f"run dir {path}: none of its checkpoints can be read; start a new run")


def remove_stale_temporaries(run_dir: Path) -> int:
    """Delete the temporary files that writers killed mid-write left in a run dir; returns how many there were."""
    stale = [p for folder in (run_dir, run_dir / "checkpoints", run_dir / "samples")
             for p in folder.glob(f".*{TEMPORARY_SUFFIX}")]  # fmt: skip
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def generator_weights(source: str | Path) -> dict[str, torch.Tensor]:
    """The generator of a model dir or installed model (its weights), or of a checkpoint / run dir (its EMA)."""
    path = Path(source)
    if not path.exists() or is_model_dir(path):
        inpainter = Inpainter.from_pretrained(source, device="cpu")
        if inpainter.model is None:
            raise InpaintError(f"{source} is a classical method: it has no weights to start from")
        return inpainter.model.state_dict()
    checkpoint = find_checkpoint(path)
    state = load_checkpoint(checkpoint)
    if "ema" not in state:
        raise InpaintError(f"checkpoint {checkpoint} holds no generator (no 'ema' entry)")
    return state["ema"]


def warm_start(generator: torch.nn.Module, source: str | Path) -> int:
    """Copy `source`'s generator weights into `generator` by name; returns how many tensors were copied.

    Every tensor of the source must find a parameter of the same name and shape (so DeepFillv2 weights start a
    Two-Face model, whose extra reference branch keeps its init, but not the other way round).
    """
    try:
        weights, own = generator_weights(source), generator.state_dict()
    except InpaintError as error:
        raise InpaintError(f"train.init_from: {error}") from None
    foreign = [key for key in weights if key not in own or own[key].shape != weights[key].shape]
    if foreign:
        raise InpaintError(
            f"train.init_from {source}: {len(foreign)} of its tensors do not fit this model, e.g. {foreign[:3]}"
        )
    with torch.no_grad():
        for key, value in weights.items():
            own[key].copy_(value.to(own[key].dtype))
    return len(weights)


def run_dir_of(checkpoint: Path) -> Path:
    return checkpoint.parent.parent


def in_run_dir(checkpoint: Path) -> bool:
    """Whether a checkpoint lies in a run dir's checkpoints/ folder (else it was kept elsewhere, e.g. in the repo)."""
    return checkpoint.parent.name == "checkpoints" and (run_dir_of(checkpoint) / "config.yaml").is_file()


def read_metrics(run_dir: Path) -> list[dict]:
    """Every record of a run's metrics.jsonl (training logs and validations), in order.

    A last line without its newline (the process was killed while appending it) is left out if it does not parse.
    """
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines) or text.endswith("\n"):
                raise InpaintError(f"{path}: line {number} is not JSON; was the file edited?") from None
    return records


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Drop the records of steps after `step` (a resume redoes them) and a torn last line from metrics.jsonl.

    Returns how many records were dropped.
    """
    path = run_dir / "metrics.jsonl"
    records, text = read_metrics(run_dir), path.read_text() if path.is_file() else ""
    kept = [record for record in records if record.get("step", 0) <= step]
    if len(kept) < len(records) or (text and not text.endswith("\n")):
        with atomic_write(path) as stream:
            stream.write("".join(json.dumps(record) + "\n" for record in kept).encode())
    return len(records) - len(kept)


def _spread(records: list[dict], count: int) -> list[dict]:
    """At most `count` records spread evenly over the list, the first and the last included."""
    if len(records) <= count:
        return records
    return [records[round(i * (len(records) - 1) / (count - 1))] for i in range(count)]


LOSS_COLUMNS = {
    "l1_coarse": "L1 coarse",
    "l1_refined": "L1 refined",
    "loss_g_adv": "G adversarial",
    "loss_d": "D hinge",
}
# Terms that only some recipes have: a column each where the run logged them.
OPTIONAL_COLUMNS = {
    "feature_matching": "D feature matching",
    "stlpips": "ST-LPIPS (loss)",
    "dlib_features": "dlib features",
    "l1_parts": "L1 face parts",
    "identity_target": "identity to truth",
    "identity_reference": "identity to reference",
}


def _card(name: str, state: dict, run_dir: Path) -> str:
    """A model card filled from the run: data, recipe, steps, hardware, speed and validation metrics."""
    config = from_dict(state["config"])
    # One record per kind and step, the last one written: runs resumed before truncate_metrics logged repeats.
    records = list({(r.get("kind"), r.get("step")): r for r in read_metrics(run_dir)}.values())
    train_logs = [r for r in records if r.get("kind") == "train"]
    validations = [r for r in records if r.get("kind") == "val"]
    # The median of the logged intervals: the last one is often cut short by a stop (SIGTERM, --max-minutes).
    speeds = sorted(r["it_per_s"] for r in train_logs if r.get("it_per_s"))
    speed = speeds[len(speeds) // 2] if speeds else None
    hardware = state.get("hardware", "unknown")
    lines = [
        f"# {name}",
        "",
        f"{DESCRIPTIONS.get(config.model.arch, 'Inpainting generator')} (`{config.model.arch}`, "
        f"{', '.join(f'{key} {value}' for key, value in config.model_args().items())}) at "
        f"{config.model.resolution}x{config.model.resolution}; the exponential moving average of the generator.",
        "",
        "## Training",
        f"- data: train `{config.data.train}`, validation `{config.data.val or 'none'}`; masks: "
        f"{', '.join(config.data.masks)} (one per sample)",
        f"- steps: {state['step']} at batch {config.train.batch_size} x {state.get('world_size', 1)} process(es)",
        f"- hardware: {hardware}",
        f"- wall time: {state.get('wall_seconds', 0.0) / 3600:.2f} h; speed: "
        f"{f'median {speed:.2f} it/s' if speed else 'not logged'}",
        f"- exported from `{run_dir}` by `faceinpaint export-weights` (faceinpaint on {platform.python_version()})",
        "",
        f"## Validation (fixed subset, fixed `{config.data.masks[0]}` masks, EMA generator)",
    ]
    if validations:
        last = validations[-1]
        size = {r["step"]: r.get("resolution", config.model.resolution) for r in validations}  # older logs: none
        if "hole_l1_reference" in last:  # reference-guided: without the reference, then with it
            lines += ["| step | size | hole L1 | hole PSNR (dB) | hole L1, reference | hole PSNR, reference (dB) |",
                      "|---|---|---|---|---|---|"]  # fmt: skip
            lines += [f"| {r['step']} | {size[r['step']]} | {r['hole_l1']:.4f} | {r['hole_psnr']:.2f} "
                      f"| {r['hole_l1_reference']:.4f} | {r['hole_psnr_reference']:.2f} |"
                      for r in _spread(validations, 12)]  # fmt: skip
        else:
            lines += ["| step | size | hole L1 | hole PSNR (dB) |", "|---|---|---|---|"]
            lines += [f"| {r['step']} | {size[r['step']]} | {r['hole_l1']:.4f} | {r['hole_psnr']:.2f} |"
                      for r in _spread(validations, 12)]  # fmt: skip
        lines += ["", f"Last validation at step {last['step']}."]
    else:
        lines.append("No validation was run.")
    if train_logs:  # the loss curve: each row is the mean since the previous log line
        columns = dict(LOSS_COLUMNS)
        columns |= {key: title for key, title in OPTIONAL_COLUMNS.items() if any(key in r for r in train_logs)}
        lines += ["", "## Loss curve", f"| step | {' | '.join(columns.values())} | it/s |",
                  "|---|" + "---|" * (len(columns) + 1)]  # fmt: skip
        for r in _spread(train_logs, 12):
            cells = [f"{r[key]:.4f}" if key in r else "-" for key in columns]
            lines.append(f"| {r['step']} | {' | '.join(cells)} | {r.get('it_per_s', 0.0):.3f} |")
    lines += ["", "## Recipe", "```yaml", dump_config(config).rstrip(), "```", ""]
    return "\n".join(lines)


NETWORKS = ("generator", "discriminator", "local_discriminator", "ema")
# A discriminator whose loss the run never logged was never trained (e.g. `train.gan=0`): slim copies leave it out.
UNTRAINED_IF_NO_LOG = {"discriminator": "loss_d", "local_discriminator": "loss_d_local"}


def slim_checkpoint(run_dir_or_checkpoint: str | Path, out: str | Path, discriminators: bool = True) -> Path:
    """Keep a run's latest checkpoint (or a given one) small enough for git: every network in float16, no optimiser.

    The slim file holds the generator, the discriminator(s) the run trained and the EMA, the step, config, wall
    time and hardware, and the run's metrics history; `faceinpaint train CONFIG --resume OUT` continues from it in
    a new run dir (Adam's moments restart). `discriminators=False` leaves even trained discriminators out (a
    resume with the adversarial term on then starts fresh ones): for a run whose last phase had the term off,
    where a discriminator would only add size. `out` is replaced atomically when it exists; it must not be the
    checkpoint it is made from.
    """
    checkpoint, out = find_checkpoint(run_dir_or_checkpoint), Path(out)
    if out.exists() and out.resolve() == checkpoint.resolve():
        raise InpaintError(f"{out}: that is the checkpoint being slimmed; write the slim copy elsewhere")
    state = load_checkpoint(checkpoint)
    slim = {key: value for key, value in state.items() if key not in ("optimizer_g", "optimizer_d", "rng_cpu")}
    for key in NETWORKS:
        if key in slim:
            slim[key] = {name: t.half() if t.is_floating_point() else t for name, t in slim[key].items()}
    if in_run_dir(checkpoint):
        slim["metrics"] = [r for r in read_metrics(run_dir_of(checkpoint)) if r.get("step", 0) <= state["step"]]
    trained_logs = [r for r in slim.get("metrics", []) if r.get("kind") == "train"]
    for key, loss in UNTRAINED_IF_NO_LOG.items():  # still at its init: a fresh one on resume is the same thing
        untrained = trained_logs and not any(loss in r for r in trained_logs)
        if key in slim and (untrained or not discriminators):
            del slim[key]
    try:
        save_checkpoint(slim, out)
    except OSError as error:
        raise InpaintError(f"--keep-checkpoint {out}: cannot write it ({error.strerror or error})") from None
    return out


def inpainter_from_checkpoint(state: dict, device: str = "cpu") -> Inpainter:
    """The EMA generator of a loaded checkpoint, ready to inpaint."""
    config = from_dict(state["config"])
    extra = {"reference": True} if config.model.guided else {}  # so that the Inpainter takes reference=
    inpainter = Inpainter.from_config(
        config.model.arch, config.model_args(), config.model.resolution, device=device, **extra
    )
    inpainter.model.load_state_dict(state["ema"], strict=True)
    return inpainter


def export_weights(run_dir_or_checkpoint: str | Path, out_dir: str | Path, fp16: bool = True) -> Path:
    """Turn a run's latest checkpoint (or a given one) into a model dir: EMA generator, config.json, model card.

    Args:
        run_dir_or_checkpoint: a run dir (its latest checkpoint is used) or a checkpoint file.
        out_dir: the new model dir; must not exist.
        fp16: store the weights as float16 (they load into a float32 model).
    Returns:
        out_dir, loadable with `Inpainter.from_pretrained`.
    """
    checkpoint = find_checkpoint(run_dir_or_checkpoint)
    state = load_checkpoint(checkpoint)
    inpainter = inpainter_from_checkpoint(state)
    out_dir = Path(out_dir)
    card = _card(out_dir.name, state, run_dir_of(checkpoint))
    return inpainter.save_pretrained(out_dir, card=card, dtype=torch.float16 if fp16 else torch.float32)
