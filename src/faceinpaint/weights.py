"""Where model dirs live and how a name given to `--weights` becomes a classical method or a model dir."""

import json
import os
from pathlib import Path

from faceinpaint.backends.classical import CLASSICAL_METHODS
from faceinpaint.errors import InpaintError
from faceinpaint.faces.detect import faces_available

# The model `make demo` and every command use when none is named, best first; a classical method ends the list
# so that something always works, even before any weights are installed.
PREFERRED_MODELS = ("deepfillv2-face-256", "telea")
# The same where a reference photo of the person is given, best first (both need the `faces` extra): on held-out eye
# and mouth holes Two-Face keeps more of the person's identity than `reference-paste`, at a far lower FID (README).
PREFERRED_REFERENCE_MODELS = ("twoface-face-256", "reference-paste")
# The released model dirs inside an installed package: pyproject.toml maps the repo's weights/ to this folder when a
# wheel is built. Installed wheels are plain folders on disk, so a path works (safetensors reads files by path). A
# source checkout has no such folder and finds the same dirs in REPO_WEIGHTS instead.
PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "bundled_weights"
# The repo's own weights/ folder (src/faceinpaint/ -> repo root), present in a source checkout.
REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_WEIGHTS = REPO_ROOT / "weights"
# Where a model dir was found, as `faceinpaint models` prints it.
SOURCE_ENVIRONMENT = "$FACEINPAINT_WEIGHTS"
SOURCE_PACKAGE = "package"
SOURCE_REPO = "repo"
SOURCE_BUILT_IN = "built in"


def weights_dirs() -> list[tuple[str, Path]]:
    """(source, folder) pairs searched for model dirs, first wins: each folder of $FACEINPAINT_WEIGHTS
    (os.pathsep-separated), the installed package's models, the repo checkout's weights/."""
    extra = [(SOURCE_ENVIRONMENT, Path(p)) for p in os.environ.get("FACEINPAINT_WEIGHTS", "").split(os.pathsep) if p]
    # REPO_WEIGHTS counts only beside the repo's pyproject.toml: an installed package's parents[2] is lib/pythonX.Y.
    repo = [(SOURCE_REPO, REPO_WEIGHTS)] if (REPO_ROOT / "pyproject.toml").is_file() else []
    return [
        (source, folder) for source, folder in [*extra, (SOURCE_PACKAGE, PACKAGE_WEIGHTS), *repo] if folder.is_dir()
    ]


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def model_sources() -> dict[str, tuple[str, Path | None]]:
    """Every usable name -> (source, model dir): classical methods (built in, None), then the model dirs found in
    `weights_dirs()`; a name found twice keeps its first."""
    models: dict[str, tuple[str, Path | None]] = {name: (SOURCE_BUILT_IN, None) for name in CLASSICAL_METHODS}
    for source, folder in weights_dirs():
        for candidate in sorted(folder.iterdir()):
            if is_model_dir(candidate) and candidate.name not in models:
                models[candidate.name] = (source, candidate)
    return models


def installed_models() -> dict[str, Path | None]:
    """Every usable name: classical methods (None) and the model dirs found in `weights_dirs()`, first one wins."""
    return {name: path for name, (_, path) in model_sources().items()}


def resolve(name_or_dir: str | os.PathLike) -> str | Path:
    """Return a classical method's name or the path of a model dir; anything else is an InpaintError."""
    text = str(name_or_dir)
    if text in CLASSICAL_METHODS:
        return text
    path = Path(text)
    if path.is_dir():
        if not is_model_dir(path):
            raise InpaintError(f"weights {path}: not a model dir (it needs config.json and model.safetensors)")
        return path
    models = installed_models()
    if text in models:
        return models[text]
    raise InpaintError(f"unknown model {text!r}; valid names: {', '.join(models)} (or the path of a model dir)")


def best_model(reference: bool = False) -> str:
    """The first of PREFERRED_MODELS that is installed, else the first model dir found, else Telea. With
    `reference` (a reference photo is given), the first installed of PREFERRED_REFERENCE_MODELS where the `faces`
    extra is installed, else the same as without."""
    models = installed_models()
    usable = [name for name in PREFERRED_REFERENCE_MODELS if name in models] if reference and faces_available() else []
    if usable:
        return usable[0]
    for name in PREFERRED_MODELS[:-1]:
        if name in models:
            return name
    networks = [name for name, path in models.items() if path is not None]
    return networks[0] if networks else PREFERRED_MODELS[-1]


def describe(path: Path) -> dict:
    """The config.json of a model dir, for listings."""
    return json.loads((path / "config.json").read_text())
