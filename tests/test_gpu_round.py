"""The GPU round's scripts on tiny faces, on the CPU: pack_faces.py's parts, gpu_round.sh's plan, start and collect."""

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from faceinpaint.data.datasets import decode_image, open_image_source
from faceinpaint.data.device import identity_index, load_uint8
from faceinpaint.training.checkpoint import load_checkpoint, read_metrics

SCRIPTS = Path(__file__).parent.parent / "scripts"
SIZE = 32  # the packed and trained side
TINY = {  # a tiny DeepFillv2 run: width 8, 32 px, a few steps
    "model": {"arch": "deepfillv2", "width": 8, "resolution": SIZE, "discriminator_width": 8},
    "data": {"train": "", "masks": ["deepfill"], "workers": 1},
    "train": {"batch_size": 2, "lr": 1e-3, "max_steps": 3, "val_images": 4},
}


def make_faces(root: Path, identities: int = 4, photos: int = 4) -> list[Path]:
    """`root/celeb/<identity>/<n>.jpg`, 48 px: a bright ellipse on a gradient, different for every photo."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:48] / 48
    paths = []
    for identity in range(identities):
        for photo in range(photos):
            colour, background, centre = rng.uniform(0.3, 1.0, 3), rng.uniform(0.0, 0.5, 3), rng.uniform(0.4, 0.6, 2)
            inside = ((x - centre[0]) / 0.3) ** 2 + ((y - centre[1]) / 0.4) ** 2 < 1
            pixels = np.where(inside[..., None], colour, background * (0.5 + y[..., None]))
            path = root / "celeb" / f"{identity:05d}" / f"{photo:03d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((pixels * 255).astype(np.uint8)).save(path, quality=95)
            paths.append(path)
    return paths


def write_list(path: Path, files: list[Path]) -> Path:
    path.write_text("".join(f"{file}\n" for file in files))
    return path


def run(command: list[str], **environment: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PY": sys.executable, "OMP_NUM_THREADS": "1", **environment}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def pack(*args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, str(SCRIPTS / "pack_faces.py"), *map(str, args)])


def gpu_round(*args: str, **environment: str) -> subprocess.CompletedProcess:
    return run(["bash", str(SCRIPTS / "gpu_round.sh"), *args], **environment)


@pytest.mark.slow
def test_pack_faces_parts_read_like_the_files(tmp_path):
    files = make_faces(tmp_path / "faces")
    listed = write_list(tmp_path / "train.flist", files)
    out = tmp_path / "packed"
    result = pack("--list", listed, "--size", SIZE, "--out", out, "--part-mib", 0.004, "--quality", 95)
    assert result.returncode == 0, result.stderr
    parts = sorted(out.glob("part-*.zip"))
    assert len(parts) >= 3 and all(part.stat().st_size <= 0.004 * 2**20 for part in parts)
    assert f"packed 16 of 16 listed images ({SIZE} px jpeg q95) in {len(parts)} part(s)" in result.stdout
    members = [name for part in parts for name in zipfile.ZipFile(part).namelist()]
    assert sorted(members) == sorted(f"{p.parent.name}/{p.name}" for p in files)  # identity kept
    # The trainer's loader reads the folder of parts: the same images (re-encoded) and the same identities.
    packed, originals = load_uint8(out, SIZE, workers=1), load_uint8(listed, SIZE, workers=1)
    number = {f"{path.parent.name}/{path.name}": index for index, path in enumerate(files)}
    order = [number[name.split(".zip/")[1]] for name in open_image_source(out)[0]]  # the loader's order
    error = (packed.float() - originals[order].float()).abs().mean()
    assert packed.shape == (16, 3, SIZE, SIZE) and error < 5.0  # JPEG at 32 px (4:2:0 on sharp edges)
    assert identity_index(out).tolist() == identity_index(listed)[order].tolist()
    assert "up to date: 16 of 16" in pack("--list", listed, "--size", SIZE, "--out", out, "--part-mib", 0.004,
                                          "--quality", 95).stdout  # fmt: skip
    subset = pack("--list", listed, "--size", SIZE, "--out", out, "--every", 2, "--limit", 5, "--format", "webp")
    assert subset.returncode == 0, subset.stderr
    assert len(list(out.glob("part-*.zip"))) == 1  # the earlier, larger pack's parts are gone
    assert len(load_uint8(out, SIZE, workers=1)) == 5
    with zipfile.ZipFile(out / "part-000.zip") as archive:
        assert all(name.endswith(".webp") for name in archive.namelist())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "30"], "--size 30: must be a multiple of 8"),
        (["--list", "missing.flist"], "no such file or folder"),
        (["--out", "{other}"], "holds other files"),
        (["--part-mib", "0"], "--part-mib 0.0: must be above 0"),
        (["--format", "gif"], "invalid choice"),
    ],
)
@pytest.mark.slow
def test_pack_faces_errors_are_one_line(tmp_path, args, message):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a part")
    listed = write_list(tmp_path / "train.flist", make_faces(tmp_path / "faces", 1, 2))
    result = pack("--list", listed, "--out", tmp_path / "out", *[arg.format(other=other) for arg in args])
    assert result.returncode in (1, 2) and message in result.stderr and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git work tree like the project's: a tracked checkpoint the run resumes from, big files it does not need,
    a tiny config, data/ ignored; face lists outside it."""
    root = tmp_path_factory.mktemp("repo")
    rng = np.random.default_rng(1)
    for name, size in {"checkpoints/keep.pt": 60_000, "checkpoints/other.pt": 200_000,
                       "weights/other/model.safetensors": 100_000}.items():  # fmt: skip
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    (root / "configs").mkdir()
    (root / "configs" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (root / ".gitignore").write_text("data/\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    files = make_faces(root.parent / f"{root.name}-faces", identities=6, photos=4)
    write_list(root.parent / f"{root.name}-train.flist", files[4:])
    write_list(root.parent / f"{root.name}-val.flist", files[:4])
    return root


def settings(repo: Path, **more: str) -> dict:
    """prepare's environment for the tiny repo: its lists, 32 px JPEG, the tiny config, a fresh run."""
    lists = {
        "LIST": str(repo.parent / f"{repo.name}-train.flist"),
        "VAL_LIST": str(repo.parent / f"{repo.name}-val.flist"),
    }
    return {"REPO": str(repo), "SIZE": str(SIZE), "FORMAT": "jpeg", "VAL_EVERY": "1", "CONFIG": "configs/tiny.yaml",
            "RESUME": "", "ASIDE": "checkpoints/other.pt weights/other", **lists, **more}  # fmt: skip


def tree_bytes(repo: Path) -> int:
    listed = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True).stdout.split()
    return sum((repo / name).stat().st_size for name in listed if (repo / name).is_file())


@pytest.mark.slow
def test_prepare_fills_two_calls_moves_aside_and_restore_puts_back(repo):
    before = {name: hashlib.sha256((repo / name).read_bytes()).hexdigest()
              for name in ("checkpoints/other.pt", "weights/other/model.safetensors")}  # fmt: skip
    tree = tree_bytes(repo) - 300_000  # what travels once the two big files are aside
    limit = (tree + 16384) / 2**20  # room for four 4 KiB parts in the first call, one beside val in the second
    result = gpu_round("prepare", **settings(repo, DATA_CALLS="2", PART_MIB="0.004", LIMIT_MIB=str(limit),
                                             MARGIN_MIB="0", EXTRA_SETS="--set train.max_steps=3"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    calls = sorted((repo / "data" / "gpu-round").glob("call-*"))
    assert [call.name for call in calls] == ["call-1", "call-2"]
    assert result.stdout.count("run(command=") == 2 and 'carry=["data/gpu-round/call-2"]' in result.stdout
    for call in calls:  # each call fits: the tree plus its carry folder
        assert tree_bytes(repo) + sum(p.stat().st_size for p in call.rglob("*") if p.is_file()) <= limit * 2**20
    carried = [part.name for call in calls for part in (call / "train").glob("part-*.zip")]
    packed = sorted(part.name for part in (repo / "data" / "packed" / str(SIZE) / "train").glob("part-*.zip"))
    assert len(set(carried)) == len(carried) and set(carried) <= set(packed) and len(carried) >= 3
    assert (calls[1] / "val" / "part-000.zip").is_file() and not (calls[0] / "val").exists()
    assert "train.max_steps=3" in (calls[1] / "plan.env").read_text()
    aside = repo / "data" / "gpu-round" / "aside"
    assert not (repo / "checkpoints" / "other.pt").exists() and (aside / "checkpoints" / "other.pt").is_file()
    assert (repo / "checkpoints" / "keep.pt").is_file()
    again = gpu_round("prepare", **settings(repo))
    assert again.returncode == 1 and "restore first" in again.stderr and len(again.stderr.splitlines()) == 1
    restored = gpu_round("restore", REPO=str(repo))
    assert restored.returncode == 0 and "2 file(s) back in place" in restored.stdout and not aside.exists()
    assert before == {name: hashlib.sha256((repo / name).read_bytes()).hexdigest() for name in before}


@pytest.mark.slow
def test_prepare_refuses_a_bad_recipe_and_moves_nothing(repo):
    result = gpu_round("prepare", **settings(repo, EXTRA_SETS="--set train.no_such_key=1"))
    assert result.returncode == 1 and "unknown key train.no_such_key" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and (repo / "checkpoints" / "other.pt").is_file()
    needed = gpu_round("prepare", **settings(repo, RESUME="checkpoints/other.pt"))
    assert needed.returncode == 1 and "it is in ASIDE" in needed.stderr


def write_part(path: Path, files: list[Path]) -> None:
    """A part as pack_faces.py writes it (stored JPEGs at SIZE named `<identity>/<image>`), made in-process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for file in files:
            buffer = io.BytesIO()
            Image.fromarray(decode_image(file.read_bytes(), str(file), SIZE)).save(buffer, "JPEG", quality=90)
            archive.writestr(f"{file.parent.name}/{file.name}", buffer.getvalue())


@pytest.mark.slow
def test_start_and_collect_train_from_the_parts_on_the_cpu(tmp_path):
    # The copy of the repo on the GPU machine, as prepare's one call carries it: parts, val, plan.env.
    repo, work, out = tmp_path / "repo", tmp_path / "work", tmp_path / "out"
    files = make_faces(tmp_path / "faces", identities=3)
    call = repo / "data" / "gpu-round" / "call-1"
    write_part(call / "train" / "part-000.zip", files[:6])
    write_part(call / "train" / "part-001.zip", files[6:])
    write_part(call / "val" / "part-000.zip", files[:4])
    (call / "plan.env").write_text(
        '[ -n "${CONFIG+set}" ] || CONFIG=configs/tiny.yaml\n[ -n "${RESUME+set}" ] || RESUME=\n'
    )
    (repo / "configs").mkdir()
    (repo / "configs" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    run_settings = {"REPO": str(repo), "WORK": str(work), "SIZE": str(SIZE), "BATCH": "2", "LOG_EVERY": "1",
                    "SAVE_EVERY": "2", "MAX_MINUTES": "1",
                    "EXTRA_SETS": "--set train.max_steps=3 --set train.val_images=4"}  # fmt: skip
    started = gpu_round("start", **run_settings)
    assert started.returncode == 0, started.stderr + started.stdout
    assert "first log lines" in started.stdout or "run dir:" in started.stdout
    assert "stash: " in started.stdout and "holds 2 part(s)" in started.stdout
    collected = gpu_round("collect", OUT=str(out), SPLIT_MIB="0.4", **run_settings)
    assert collected.returncode == 0, collected.stderr + collected.stdout
    files = sorted(path.name for path in out.iterdir())
    assert len(files) <= 8 and all((out / name).stat().st_size <= 16 * 2**20 for name in files)
    expected = {
        "metrics.jsonl",
        "log.txt",
        "config.yaml",
        "train-output.txt",
        "collect.txt",
        "sample-step-0000002.png",
    }
    assert expected <= set(files)
    pieces = sorted(out.glob("step-0000003.pt.part*"))
    assert len(pieces) >= 2  # the slim checkpoint is over SPLIT_MIB: it comes back in pieces
    joined = tmp_path / "step-0000003.pt"
    joined.write_bytes(b"".join(piece.read_bytes() for piece in pieces))
    assert hashlib.sha256(joined.read_bytes()).hexdigest() in (out / "collect.txt").read_text()
    state = load_checkpoint(joined)
    assert state["step"] == 3 and "optimizer_g" not in state
    assert all(t.dtype == torch.float16 for t in state["ema"].values() if t.is_floating_point())
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["data"]["train"] == str(work / "train") and config["model"]["resolution"] == SIZE
    assert config["data"]["val"] == str(work / "val") and config["train"]["batch_size"] == 2
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"] == [1, 2, 3]


def test_gpu_round_bad_input_is_one_line(tmp_path):
    for args, environment, message in [
        (["bogus"], {}, "usage"),
        (["collect"], {"WORK": str(tmp_path), "OUT": ""}, "OUT is not set"),
        (["collect"], {"WORK": str(tmp_path), "OUT": str(tmp_path / "out")}, "no run was started"),
        (["start"], {"REPO": str(tmp_path), "WORK": str(tmp_path / "work")}, "no data/gpu-round/call-* folder"),
        (["prepare"], {"REPO": str(tmp_path)}, "not a git work tree"),
    ]:
        result = gpu_round(*args, **environment)
        assert result.returncode in (1, 2) and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1, result.stderr
