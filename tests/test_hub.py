"""torch.hub: the repo's hubconf.py lists its entry points and returns ready Inpainters with the released weights."""

import importlib.util
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from faceinpaint import Inpainter

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {"deepfillv2_face": "deepfillv2-face-256", "twoface_face": "twoface-face-256"}  # -> the model dir


def load_hubconf():
    """hubconf.py imported from its file, as torch.hub does (torch.hub.list and help only reach GitHub)."""
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hubconf_offers_the_released_models_and_names_every_runtime_dependency():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml takes Python 3.11")
    hubconf = load_hubconf()
    functions = {name for name, value in vars(hubconf).items() if inspect.isfunction(value)}
    entries = {name for name in functions if not name.startswith("_")}
    assert entries == set(ENTRY_POINTS)
    assert all((REPO / "weights" / model_dir).is_dir() for model_dir in ENTRY_POINTS.values())
    assert "reference" in hubconf.twoface_face.__doc__
    # Every dependency of pyproject.toml, by the name it is imported with, is in the list torch.hub checks.
    import_names = {"pillow": "PIL", "opencv-python-headless": "cv2", "scikit-image": "skimage", "pyyaml": "yaml"}
    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower() for requirement in required}
    assert {import_names.get(name, name) for name in names} == set(hubconf.dependencies)
    assert all(importlib.util.find_spec(name) for name in hubconf.dependencies)


@pytest.mark.parametrize(("entry", "name"), ENTRY_POINTS.items())
def test_hub_load_inpaints_the_sample(entry, name, face):
    image, hole = face
    inpainter = torch.hub.load(str(REPO), entry, source="local", device="cpu")
    assert isinstance(inpainter, Inpainter) and inpainter.name == name
    reference = image if inpainter.uses_reference else None
    before, after = np.asarray(image), np.asarray(inpainter(image, hole, reference))
    assert after.shape == before.shape
    assert np.array_equal(after[~hole], before[~hole]) and not np.array_equal(after[hole], before[hole])
