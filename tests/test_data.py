"""Tests of the data tools (file lists, Two-Face layout), the datasets and the device-resident uint8 sets."""

import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceinpaint.cli import main
from faceinpaint.data.datasets import FileListDataset, TwoFaceDataset
from faceinpaint.data.device import identity_index, load_uint8
from faceinpaint.data.lists import make_file_lists, make_twoface, split_identity
from faceinpaint.errors import InpaintError

COUNTS = {"id0": 2, "id1": 3, "id2": 4, "id3": 5, "id4": 6, "id5": 7}  # 27 photos of 6 people at 40x48


def _save(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(pixels).save(path)


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    """Identity folders `faces/<identity>/<n>.{png,jpg}` with distinct random pixels."""
    root = tmp_path / "faces"
    for number, (identity, count) in enumerate(COUNTS.items()):
        for index in range(count):
            _save(root / identity / f"{index:03d}.{'png' if index % 2 else 'jpg'}", 100 * number + index)
    return root


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    for index in range(10):
        _save(tmp_path / "flat" / f"{index}.png", index)
    return tmp_path / "flat"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _tree(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def test_flist_identity_split(faces: Path, tmp_path: Path) -> None:
    before = _tree(faces)
    counts = make_file_lists(faces, tmp_path / "lists", val_identities=2, seed=3)
    train, val = _lines(tmp_path / "lists" / "train.flist"), _lines(tmp_path / "lists" / "val.flist")
    assert sorted(train + val) == sorted(str(path.resolve()) for path in faces.rglob("*.*"))  # each exactly once
    people = {split: {Path(line).parent.name for line in lines} for split, lines in (("t", train), ("v", val))}
    assert len(people["v"]) == 2 and not people["t"] & people["v"]
    assert counts == {"train": len(train), "val": len(val), "train_identities": 4, "val_identities": 2, "tied": 0}
    make_file_lists(faces, tmp_path / "again", val_identities=2, seed=3)
    assert _lines(tmp_path / "again" / "train.flist") == train  # same seed, same shuffled lists
    make_file_lists(faces, tmp_path / "other", val_identities=2, seed=4)
    assert _lines(tmp_path / "other" / "train.flist") != train
    assert _tree(faces) == before  # ROOT untouched


def test_flist_fraction_flat_and_ties(faces: Path, flat: Path, tmp_path: Path) -> None:
    counts = make_file_lists(faces, tmp_path / "fraction", val_fraction=0.25)
    assert abs(counts["val"] - 27 * 0.25) <= 3.5 and counts["train"] + counts["val"] == 27
    counts = make_file_lists(flat, tmp_path / "flat_lists", val_fraction=0.3, relative=True)
    assert (counts["train"], counts["val"]) == (7, 3)
    dataset = FileListDataset(tmp_path / "flat_lists" / "val.flist", 16)  # relative paths resolve from the flist
    assert len(dataset) == 3 and dataset[0].shape == (3, 16, 16)
    with pytest.raises(InpaintError, match="identity folders"):
        make_file_lists(flat, tmp_path / "bad", val_identities=1)
    # A photo filed under two identities ties them: they land on the same side of every split.
    (faces / "id2" / "copy.png").write_bytes((faces / "id5" / "001.png").read_bytes())
    for seed in range(4):
        counts = make_file_lists(faces, tmp_path / f"tied{seed}", val_identities=3, seed=seed)
        val = {Path(line).parent.name for line in _lines(tmp_path / f"tied{seed}" / "val.flist")}
        assert counts["tied"] == 2 and ({"id2", "id5"} <= val or not {"id2", "id5"} & val)


def test_split_identity_follows_the_seed() -> None:
    # The seed's script: floor(0.4 n) real, floor(0.4 n) masked, the rest reference.
    assert [split_identity(count, 0.4, 0.4) for count in (3, 5, 10, 12)] == [(1, 1), (2, 2), (4, 4), (4, 4)]


def test_twoface_layout_lists_and_zip(faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "twoface"
    counts = make_twoface(faces, out, val_identities=1, seed=0, make_zip=True)
    assert counts["skipped"] == 1 and counts["train_identities"] + counts["validation_identities"] == 5
    total = {kind: counts[f"train_{kind}"] + counts[f"validation_{kind}"] for kind in ("real", "masked", "reference")}
    assert total == {"real": 1 + 1 + 2 + 2 + 2, "masked": 8, "reference": 25 - 16}
    for split in ("train", "validation"):
        masked, real = _lines(out / split / "masked-files.txt"), _lines(out / split / "real-files.txt")
        assert len(masked) == counts[f"{split}_masked"] and all(line.count("/") == 1 for line in masked + real)
        assert all((out / split / "masked" / line).is_file() for line in masked)
        for line in _lines(out / split / "reference-files.txt"):
            identity, names = line.split(":")
            assert all((out / split / "reference" / identity / name).is_file() for name in names.split(","))
    assert "id5:004.jpg,005.png,006.jpg" in _lines(out / "train" / "reference-files.txt") + _lines(
        out / "validation" / "reference-files.txt"
    )
    # The zip holds the same tree and loads to the same tensors as the folder.
    torch.manual_seed(0)
    from_folder = TwoFaceDataset(out, "train", 16, flip=False)
    from_zip = TwoFaceDataset(out / "data.zip", "train", 16, flip=False)
    assert from_folder.masked == from_zip.masked and len(from_folder) == counts["train_masked"]
    torch.manual_seed(1)
    one = from_folder[2]
    torch.manual_seed(1)
    two = from_zip[2]
    for key in ("image", "reference", "real"):
        assert one[key].shape == (3, 16, 16) and one[key].min() >= -1 and one[key].max() <= 1
        assert torch.equal(one[key], two[key])
    for index in range(len(from_folder)):  # a reference is another photo of the same person
        item = from_folder[index]
        identity = from_folder.masked[index].split("/")[2]
        assert all(name.split("/")[2] == identity for name in from_folder.references[identity])
        assert not torch.equal(item["image"], item["reference"])


def test_twoface_loads_the_seed_layout(tmp_path: Path) -> None:
    # As the seed's scripts left it: lists inside the kind folders, reference list at the root, no split lists.
    root = tmp_path / "data"
    for kind, names in (
        ("real", ["001.jpg", "002.jpg"]),
        ("masked", ["003.jpg", "004.jpg"]),
        ("reference", ["005.jpg"]),
    ):
        for number, name in enumerate(names):
            _save(root / "train" / kind / "0257343" / name, number)
    (root / "train" / "masked" / "masked-files.txt").write_text("0257343/004.jpg\n0257343/003.jpg\n")
    (root / "reference-files.txt").write_text("0257343:005.jpg\n")
    dataset = TwoFaceDataset(root, "train", 8)
    assert dataset.masked == ["train/masked/0257343/004.jpg", "train/masked/0257343/003.jpg"]
    assert len(dataset.real) == 2 and dataset[0]["reference"].shape == (3, 8, 8)


def test_file_list_dataset_shapes_flip_and_errors(faces: Path, tmp_path: Path) -> None:
    dataset = FileListDataset(faces, 24, flip=False)
    assert len(dataset) == 27
    image = dataset[0]
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32 and -1 <= image.min() < image.max() <= 1
    flipped = FileListDataset(faces, 24, flip=True)
    seen = {torch.equal(flipped[0], image.flip(-1)) for _ in range(20)}
    assert seen == {True, False}  # mirrored sometimes, never otherwise changed
    samples = [flipped[0] for _ in range(5)]
    assert all(torch.equal(sample, image) or torch.equal(sample, image.flip(-1)) for sample in samples)
    (faces / "id0" / "broken.png").write_bytes(b"not a png")
    with_broken = FileListDataset(faces, 24)
    with pytest.raises(InpaintError, match="broken.png"):
        with_broken[with_broken.files.index(str(faces / "id0" / "broken.png"))]
    with pytest.raises(InpaintError, match="broken.png"):
        load_uint8(faces, 24, workers=2)


def test_a_folder_of_zip_parts_reads_like_the_files(faces: Path, tmp_path: Path) -> None:
    """The GPU round's data (scripts/pack_faces.py): zips of `<identity>/<image>` members in one folder."""
    files = sorted(faces.rglob("*.*"))
    parts = tmp_path / "parts"
    (parts / "rest").mkdir(parents=True)
    for part, chunk in ((parts / "part-000.zip", files[:10]), (parts / "rest" / "part-001.zip", files[10:])):
        with zipfile.ZipFile(part, "w") as archive:
            for path in chunk:
                archive.write(path, path.relative_to(faces).as_posix())
    (parts / "manifest.json").write_text("{}")  # neither an image nor a zip: not read
    assert torch.equal(load_uint8(parts, 16, workers=2), load_uint8(faces, 16, workers=2))
    assert torch.equal(identity_index(parts), identity_index(faces))
    assert len(FileListDataset(parts, 16)) == 27
    (parts / "loose.png").write_bytes((faces / "id0" / "001.png").read_bytes())  # images first: zips are ignored
    assert len(FileListDataset(parts, 16)) == 1
    (parts / "loose.png").unlink()
    (parts / "part-000.zip").write_bytes(b"not a zip")
    with pytest.raises(InpaintError, match="part-000.zip: cannot read it"):
        load_uint8(parts, 16)


def test_load_uint8_and_identity_index(faces: Path, tmp_path: Path) -> None:
    images = load_uint8(FileListDataset(faces, 16), 16, workers=2)
    assert images.shape == (27, 3, 16, 16) and images.dtype == torch.uint8
    assert torch.equal(images[0].float() / 127.5 - 1, FileListDataset(faces, 16, flip=False)[0])
    identities = identity_index(faces)
    assert identities.tolist() == [number for number, count in enumerate(COUNTS.values()) for _ in range(count)]
    # Two-Face datasets feed the resident mode with their listed identities.
    make_twoface(faces, tmp_path / "twoface", val_identities=1)
    dataset = TwoFaceDataset(tmp_path / "twoface", "train", 8)
    assert len(load_uint8(dataset, 8, workers=2)) == len(identity_index(dataset)) == len(dataset.files()[0])


def test_cli(faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "flist", str(faces), "--out", str(tmp_path / "lists"), "--val-identities", "2"]) == 0
    assert "2 identities" in capsys.readouterr().out
    assert main(["data", "twoface", str(faces), "--out", str(tmp_path / "tf"), "--zip", "--seed", "1"]) == 0
    output = capsys.readouterr().out
    assert "skipped 1 identities" in output and (tmp_path / "tf" / "data.zip").is_file()
    for arguments in (
        ["data", "flist", str(tmp_path / "missing"), "--out", str(tmp_path / "new")],
        ["data", "twoface", str(faces), "--out", str(tmp_path / "tf")],  # not empty
        ["data", "flist", str(faces), "--out", str(faces / "lists")],  # inside ROOT
    ):
        assert main(arguments) == 1
        error = capsys.readouterr().err
        assert error.startswith("faceinpaint: error:") and error.count("\n") == 1
    assert not (tmp_path / "new").exists() and not (faces / "lists").exists()


def test_reproducible_choice_is_not_global_random(faces: Path, tmp_path: Path) -> None:
    random.seed(123)  # the tools use their own seeded generator, whatever the global state
    make_file_lists(faces, tmp_path / "a", val_identities=2, seed=9)
    random.seed(456)
    make_file_lists(faces, tmp_path / "b", val_identities=2, seed=9)
    assert _lines(tmp_path / "a" / "val.flist") == _lines(tmp_path / "b" / "val.flist")
