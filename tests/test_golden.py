"""Golden outputs of the shipped models: the weights in weights/ load into the architecture their card names and
give the recorded completion of the bundled face, so a refactor that changes any model's output is caught."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from golden import POSITIONS, golden_output

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
GOLDEN = json.loads((Path(__file__).parent / "golden_outputs.json").read_text())


def test_every_shipped_model_has_a_golden_entry():
    shipped = sorted(path.name for path in WEIGHTS.iterdir() if (path / "config.json").is_file())
    assert shipped == sorted(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_shipped_model_gives_its_recorded_output(name):
    model_dir, golden = WEIGHTS / name, GOLDEN[name]
    digest = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert digest == golden["sha256"], f"{name}'s weights changed: rerun scripts/golden_outputs.py"
    config = json.loads((model_dir / "config.json").read_text())
    assert (config["arch"], config["resolution"]) == (golden["arch"], golden["resolution"])
    card = (model_dir / "README.md").read_text()
    assert f"(`{config['arch']}`," in card and f"at {config['resolution']}x{config['resolution']}" in card
    output = golden_output(model_dir)
    np.testing.assert_allclose(output[:, POSITIONS[:, 0], POSITIONS[:, 1]], golden["values"], rtol=0, atol=1e-3)
