"""Write tests/golden_outputs.json: for each shipped model in weights/, the sha256 of its weights, its card's arch
and resolution, and a few output values on the bundled face, which tests/test_golden.py checks to 1e-3.

Run after shipping new weights (the test names this script when a weights file no longer matches):
    .venv/bin/python scripts/golden_outputs.py
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from golden import POSITIONS, golden_output  # noqa: E402

OUT = ROOT / "tests" / "golden_outputs.json"


def main() -> None:
    torch.set_num_threads(1)
    entries = {}
    for model_dir in sorted(path for path in (ROOT / "weights").iterdir() if (path / "config.json").is_file()):
        config = json.loads((model_dir / "config.json").read_text())
        probed = golden_output(model_dir)[:, POSITIONS[:, 0], POSITIONS[:, 1]]  # (3, positions)
        entries[model_dir.name] = {
            "sha256": hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest(),
            "arch": config["arch"],
            "resolution": config["resolution"],
            "values": np.round(probed.astype(np.float64), 5).tolist(),
        }
    OUT.write_text(json.dumps(entries, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}: {', '.join(entries)}")


if __name__ == "__main__":
    main()
