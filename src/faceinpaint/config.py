"""Experiment configs: one flat YAML per experiment -> frozen, typed dataclasses; `--set section.key=value` overrides.

No includes, interpolation or type strings: a variant is a copied file. An unknown section or key is an error that
lists the valid ones, and every value is checked against its field's type.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from faceinpaint.errors import InpaintError

REFERENCE_ARCHS = ("twoface",)  # keys of faceinpaint.models.ARCHITECTURES that take a reference photo


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "deepfillv2"  # key of faceinpaint.models.ARCHITECTURES
    width: int = 48  # the paper's cnum
    resolution: int = 256  # training and inference size, a multiple of 8
    discriminator_width: int = 64  # SN-PatchGAN's first layer (the global and the local one)
    reference_width: int = 32  # twoface only: width of the reference encoder
    identity_dim: int = 128  # twoface only: size of the learned identity embedding (FiLM)
    # twoface only (v2): the reference warped onto the face by landmarks enters the encoders (faces/reference_prior.py)
    reference_prior: bool = False

    @property
    def guided(self) -> bool:
        """Whether the arch is reference-guided: it trains with a reference per sample, validates with and without
        one, and its config.json says "reference": true. The one place that names such archs."""
        return self.arch in REFERENCE_ARCHS


@dataclass(frozen=True)
class DataConfig:
    train: str = ""  # a .flist, a folder or a .zip of training images (layout files); the dataset dir (twoface)
    val: str = ""  # the same for validation (held-out identities); empty: no validation
    layout: str = "files"  # "files": identity = parent folder's name; "twoface": the seed's lists (data/datasets.py)
    masks: tuple[str, ...] = ("deepfill",)  # mask kinds (faceinpaint.data.masks), one drawn per sample
    flip: bool = True  # random horizontal flips
    resident: bool = True  # decode once and keep the set as uint8 on the training device
    workers: int = 4  # decoding threads


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16  # per process
    lr: float = 1e-4  # Adam, both networks
    betas: tuple[float, float] = (0.5, 0.999)
    l1_coarse: float = 1.0  # weight of L1(coarse, ground truth) over the whole image
    l1_refined: float = 1.0  # weight of L1(refined, ground truth)
    gan: float = 1.0  # weight of the hinge adversarial term for the generator
    local_gan: float = 0.0  # weight of a second SN-PatchGAN on the hole's bounding box; 0: no local discriminator
    identity_weight: float = 0.0  # weight of 1 - cos(dlib(output), dlib(truth)) + the same to the reference
    # Structure losses on the completed image (training/losses.py; each 0 = off). stlpips_weight trains on
    # ST-LPIPS's own AlexNet, so that model's ST-LPIPS figures must say so (a network that trains a model cannot
    # judge it).
    stlpips_weight: float = 0.0  # ST-LPIPS (AlexNet, stlpips-pytorch) distance to the ground truth
    dlib_feature_weight: float = 0.0  # dlib face-ResNet stage features vs the ground truth's (face perceptual)
    dlib_feature_in_hole: bool = False  # ...averaged over the positions the hole reaches, not the whole face
    feature_matching_weight: float = 0.0  # L1 of the discriminator's features, real vs completed (needs gan > 0)
    part_l1_weight: float = 0.0  # extra L1 on the hole's pixels over the aligned eyes, nose and mouth
    gan_start_step: int = 0  # the discriminator and the adversarial terms start at this (absolute) step...
    gan_ramp_steps: int = 0  # ...and their weight rises linearly to `gan` / `local_gan` over this many steps
    reference_dropout: float = 0.25  # twoface: probability that a sample trains without its reference
    # twoface: probability that a sample's reference is its own photo, re-lit and slightly moved (batches.jittered),
    # so that using the reference pays from the first steps; also gives single-photo people a reference
    self_reference: float = 0.0
    # twoface: the reference branch's lr is lr x this. Above 1 it lets the zero-initialised branch catch up with a
    # generator warm-started from DeepFillv2 (train.init_from) without shaking the inherited weights.
    reference_lr_scale: float = 1.0
    # A model dir (or installed model name) or a training checkpoint / run dir whose generator starts this one, e.g.
    # Two-Face from the trained DeepFillv2: same-named weights are copied, the rest keep their init. Fresh runs only.
    init_from: str = ""
    ema: float = 0.999  # decay of the generator's exponential moving average (the exported weights)
    max_steps: int = 100_000
    seed: int = 0
    bf16: bool = True  # autocast on CUDA
    cpu_bf16: bool = False  # autocast on the CPU too: faster where it has AVX512-BF16 or AMX, slow elsewhere
    compile: bool = False  # torch.compile both networks
    channels_last: bool = True
    log_every: int = 50
    sample_every: int = 1000  # image grids
    val_every: int = 1000
    val_images: int = 64  # fixed validation subset, each with a fixed DeepFillv2 mask
    save_every: int = 2000
    keep_checkpoints: int = 3  # the last K are kept...
    keep_every: int = 0  # ...plus every multiple of this step (0: none), for the progress figure
    run_root: str = "runs"


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = "experiment"  # the config file's stem: run dirs are runs/<number>-<name>

    def to_dict(self) -> dict:
        plain = dataclasses.asdict(self)
        return {key: plain[key] for key in ("model", "data", "train")}

    def model_args(self) -> dict:
        """The generator's constructor arguments: `ARCHITECTURES[arch](**args)`, stored in config.json."""
        if self.model.guided:
            args = {"width": self.model.width, "reference_width": self.model.reference_width,
                    "identity_dim": self.model.identity_dim}  # fmt: skip
            return args | ({"prior": True} if self.model.reference_prior else {})
        return {"width": self.model.width}


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
NON_NEGATIVE = ("l1_coarse", "l1_refined", "gan", "local_gan", "identity_weight", "stlpips_weight",
                "dlib_feature_weight", "feature_matching_weight", "part_l1_weight", "gan_start_step",
                "gan_ramp_steps")  # fmt: skip
PROBABILITIES = ("reference_dropout", "self_reference")  # per-sample draws: between 0 and 1


def _coerce(value, kind, where: str):
    """Check `value` against the annotation `kind`; ints are accepted for floats and lists for tuples."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InpaintError(f"{where}: expected a list, got {value!r}")
        if args[-1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise InpaintError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"{where}: union fields are not supported")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind is str and value is None:  # `--set data.val=` or an empty YAML value: the empty string
        return ""
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InpaintError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _section(name: str, values: dict) -> object:
    cls = SECTIONS[name]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise InpaintError(f"unknown key {name}.{unknown[0]}; valid keys in {name}: {', '.join(hints)}")
    section = cls(**{key: _coerce(value, hints[key], f"{name}.{key}") for key, value in values.items()})
    if getattr(section, "reference_lr_scale", 1.0) <= 0:
        raise InpaintError(f"{name}.reference_lr_scale: must be above 0, got {section.reference_lr_scale}")
    for key in NON_NEGATIVE:
        if key in hints and getattr(section, key) < 0:
            raise InpaintError(f"{name}.{key}: must be 0 (off) or more, got {getattr(section, key)}")
    for key in PROBABILITIES:
        if key in hints and not 0 <= getattr(section, key) <= 1:
            raise InpaintError(f"{name}.{key}: a probability, from 0 to 1, got {getattr(section, key)}")
    choices = {"layout": ("files", "twoface")}
    for key, valid in choices.items():
        if key in hints and getattr(section, key) not in valid:
            raise InpaintError(f"{name}.{key}: {getattr(section, key)!r} is not one of {', '.join(valid)}")
    return section


def from_dict(data: dict, name: str = "experiment") -> Config:
    """Build a Config from nested dicts ({"model": {...}, ...}), checking every section, key and type."""
    if not isinstance(data, dict):
        raise InpaintError("a config must be a mapping of sections (model, data, train)")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise InpaintError(f"unknown section {unknown[0]!r}; valid sections: {', '.join(SECTIONS)}")
    for section, values in data.items():
        if not isinstance(values, dict):
            raise InpaintError(f"section {section!r} must be a mapping of keys to values")
    config = Config(**{section: _section(section, data.get(section) or {}) for section in SECTIONS}, name=name)
    _check_names(config)
    return config


def _check_names(config: Config) -> None:
    """Names that only a table elsewhere knows (architectures, mask kinds): checked when the config is read, so a
    typo fails `train --dry-run` with the valid choices, not a run after decoding every image."""
    from faceinpaint.data.masks import MASK_KINDS
    from faceinpaint.models import ARCHITECTURES

    if config.model.arch not in ARCHITECTURES:
        raise InpaintError(f"model.arch: {config.model.arch!r} is not one of {', '.join(ARCHITECTURES)}")
    if not config.data.masks:
        raise InpaintError(f"data.masks: give at least one mask kind ({', '.join(MASK_KINDS)})")
    for kind in config.data.masks:
        if kind not in MASK_KINDS:
            raise InpaintError(f"data.masks: {kind!r} is not one of {', '.join(MASK_KINDS)}")
    if config.model.reference_prior and not config.model.guided:
        raise InpaintError(f"model.reference_prior: only the twoface arch takes it, not {config.model.arch!r}")


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (values parsed as YAML) to nested dicts."""
    data = {section: dict(values or {}) for section, values in data.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise InpaintError(f"--set {item!r}: expected section.key=value, e.g. train.lr=2e-4")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        data.setdefault(section, {})[name] = value
    return data


def read_yaml(path: Path, what: str):
    """A YAML file's contents ({} when empty); a missing file or bad YAML is a one-line InpaintError."""
    if not path.is_file():
        raise InpaintError(f"{what} {path}: no such file")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InpaintError(f"{what} {path}: not valid YAML ({' '.join(str(error).split())})") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML experiment config, apply `--set` overrides, and return it typed and frozen.

    Args:
        path: a YAML file with the sections model, data and train (see configs/).
        overrides: ["train.lr=2e-4", ...]; each must name an existing key and fit its type.
    Returns:
        The Config; its `name` is the file's stem.
    """
    path = Path(path)
    data = read_yaml(path, "config")
    if not isinstance(data, dict):
        raise InpaintError(f"config {path}: expected sections model, data and train")
    return from_dict(apply_overrides(data, overrides or []), name=path.stem)


def dump_config(config: Config) -> str:
    """The resolved config as YAML, loadable by `load_config`."""
    data = config.to_dict()
    for section in data.values():
        for key, value in section.items():
            if isinstance(value, tuple):
                section[key] = list(value)
    return yaml.safe_dump(data, sort_keys=False)
