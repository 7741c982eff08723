"""Where model dirs live and how a name given to `--weights` becomes a classical method or a model dir."""

import json
import os
from pathlib import Path

from faceinpaint.classical import CLASSICAL_METHODS
from faceinpaint.errors import InpaintError

# The model `make demo` and every command use when none is named, best first; a classical method ends the list
# so that something always works, even before any weights are installed.
PREFERRED_MODELS = ("deepfillv2-face-256", "telea")
# The repo's own weights/ folder (src/faceinpaint/ -> repo root), present in a source checkout.
REPO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"


def weights_dirs() -> list[Path]:
    """Folders searched for model dirs: $FACEINPAINT_WEIGHTS (os.pathsep-separated) first, then the repo's weights/."""
    extra = [Path(p) for p in os.environ.get("FACEINPAINT_WEIGHTS", "").split(os.pathsep) if p]
    return [folder for folder in [*extra, REPO_WEIGHTS] if folder.is_dir()]


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def installed_models() -> dict[str, Path | None]:
    """Every usable name: classical methods (None) and the model dirs found in `weights_dirs()`, first one wins."""
    models: dict[str, Path | None] = dict.fromkeys(CLASSICAL_METHODS)
    for folder in weights_dirs():
        for candidate in sorted(folder.iterdir()):
            if is_model_dir(candidate) and candidate.name not in models:
                models[candidate.name] = candidate
    return models


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


def best_model() -> str:
    """The first of PREFERRED_MODELS that is installed, else the first model dir found, else Telea."""
    models = installed_models()
    for name in PREFERRED_MODELS[:-1]:
        if name in models:
            return name
    networks = [name for name, path in models.items() if path is not None]
    return networks[0] if networks else PREFERRED_MODELS[-1]


def describe(path: Path) -> dict:
    """The config.json of a model dir, for listings."""
    return json.loads((path / "config.json").read_text())
