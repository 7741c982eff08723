"""Batch inference under torchrun: the ranks split a folder, each image once, and rank 0 reports the totals."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from faceinpaint import InpaintError
from faceinpaint.inference.shards import Shard, current_shard, rank_device


def _torchrun() -> list[str]:
    script = Path(sys.executable).parent / "torchrun"
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def write_faces(images: Path, masks: Path, count: int) -> None:
    """`count` generated 64x64 faces (skin oval, eyes, mouth on a random background) and a hole mask for each."""
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        face = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(face)
        draw.ellipse((12, 6, 52, 58), fill=tuple(int(v) for v in rng.integers(150, 240, 3)))
        draw.ellipse((22, 24, 28, 30), fill=(40, 30, 30))
        draw.ellipse((36, 24, 42, 30), fill=(40, 30, 30))
        draw.line((26, 44, 38, 44), fill=(150, 60, 60), width=3)
        face.save(images / f"face-{index:02d}.png")
        hole = Image.new("L", (64, 64))
        ImageDraw.Draw(hole).rectangle((20, 20 + index % 8, 44, 34 + index % 8), fill=255)
        hole.save(masks / f"face-{index:02d}.png")


def run_torchrun(images: Path, masks: Path, out: Path, ranks: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node RANKS -m faceinpaint.cli inpaint` on CPU (gloo), Telea for speed."""
    launch = [*_torchrun(), "--standalone", "--nproc_per_node", str(ranks), "-m", "faceinpaint.cli"]
    inpaint = ["inpaint", "--weights", "telea", "--device", "cpu", "--image", images, "--mask", masks, "--out", out]
    command = [*launch, *map(str, inpaint)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_the_slices_of_the_ranks_partition_the_work(world):
    items = list(range(20))
    slices = [Shard(rank, world).take(items) for rank in range(world)]
    assert sorted(item for part in slices for item in part) == items
    assert max(map(len, slices)) - min(map(len, slices)) <= 1


def test_shard_comes_from_torchruns_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert current_shard() == Shard(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert current_shard() == Shard(3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(InpaintError, match="rank 4 of world size 4"):
        current_shard()
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(InpaintError, match=r"\$WORLD_SIZE is 'four'"):
        current_shard()


def test_a_plain_run_keeps_the_device_it_was_given():
    assert [rank_device(device, Shard()) for device in ("auto", "cpu", "cuda")] == ["auto", "cpu", "cuda"]
    assert rank_device("cpu", Shard(1, 2, 1)) == "cpu"


@pytest.mark.slow
def test_two_cpu_ranks_inpaint_twenty_faces_each_once(tmp_path):
    images, masks, out = tmp_path / "faces", tmp_path / "masks", tmp_path / "out"
    write_faces(images, masks, 20)
    done = run_torchrun(images, masks, out)
    assert done.returncode == 0, done.stderr
    # 20 distinct outputs and 10 + 10 images written by the ranks: each image was written exactly once.
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in images.iterdir())
    assert done.stdout.strip().splitlines() == [f"wrote 20 image(s) to {out} on 2 ranks (10 + 10); 0 failed"]
    for source in images.iterdir():
        before, after = np.asarray(Image.open(source)), np.asarray(Image.open(out / source.name))
        hole = np.asarray(Image.open(masks / source.name)) > 127
        assert np.array_equal(after[~hole], before[~hole]) and not np.array_equal(after[hole], before[hole])


@pytest.mark.slow
def test_a_failed_image_on_any_rank_makes_the_launch_fail(tmp_path):
    images, masks, out = tmp_path / "faces", tmp_path / "masks", tmp_path / "out"
    write_faces(images, masks, 6)
    (images / "face-03.png").write_bytes(b"not a png")  # rank 1's slice: face-01, face-03, face-05
    done = run_torchrun(images, masks, out)
    assert done.returncode == 1
    assert f"wrote 5 image(s) to {out} on 2 ranks (3 + 2); 1 failed" in done.stdout
    assert done.stderr.count("faceinpaint: skipped face-03.png") == 1
    assert sorted(p.name for p in out.iterdir()) == [f"face-0{i}.png" for i in (0, 1, 2, 4, 5)]
