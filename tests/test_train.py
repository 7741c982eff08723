"""The training loop on a tiny config: losses, exact resume, SIGTERM, DDP on two CPU processes, export, figures."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from faceinpaint.cli import main
from faceinpaint.config import dump_config, from_dict, load_config
from faceinpaint.errors import InpaintError
from faceinpaint.inpainter import Inpainter
from faceinpaint.models.deepfill import DeepFillV2
from faceinpaint.models.discriminator import SNPatchGAN
from faceinpaint.training.checkpoint import export_weights, list_checkpoints, load_checkpoint, read_metrics
from faceinpaint.training.loop import train


def make_faces(folder: Path, count: int = 16, size: int = 32) -> Path:
    """Smooth, varied synthetic 'faces': a bright ellipse on a gradient, so a tiny model can learn something."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    for number in range(count):
        colour, background = rng.uniform(0.3, 1.0, 3), rng.uniform(0.0, 0.5, 3)
        centre = rng.uniform(0.35, 0.65, 2)
        inside = ((x - centre[0]) / 0.3) ** 2 + ((y - centre[1]) / 0.4) ** 2 < 1
        pixels = np.where(inside[..., None], colour, background * (0.5 + y[..., None]))
        Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / f"{number:03d}.png")
    return folder


def tiny_config(tmp_path: Path, faces: int = 16, **train) -> dict:
    folder = make_faces(tmp_path / "faces", count=faces)
    return {
        "model": {"arch": "deepfillv2", "width": 8, "resolution": 32, "discriminator_width": 8},
        "data": {"train": str(folder), "val": str(folder), "masks": ["deepfill", "lama-thick"], "workers": 1,
                 "flip": faces > 4},
        "train": {"batch_size": 4, "lr": 1e-3, "max_steps": 20, "log_every": 1, "sample_every": 10,
                  "val_every": 10, "val_images": 8, "save_every": 5, "keep_checkpoints": 2,
                  "run_root": str(tmp_path / "runs"), **train},
    }  # fmt: skip


def _losses(run_dir: Path) -> list[tuple]:
    return [
        (r["step"], r["loss_d"], r["l1_coarse"], r["l1_refined"])
        for r in read_metrics(run_dir)
        if r["kind"] == "train"
    ]


def test_twenty_steps_give_finite_falling_losses_and_a_full_run_dir(tmp_path):
    # One batch of four faces, 40 steps: L1 falls visibly (the output starts near grey and wakes up after ~20).
    result = train(from_dict(tiny_config(tmp_path, faces=4, max_steps=40, val_every=20), name="tiny"))
    assert result.step == 40 and result.run_dir.name == "00000-tiny"
    losses = _losses(result.run_dir)
    assert len(losses) == 40 and np.isfinite(np.array(losses)).all()
    refined = [loss[3] for loss in losses]
    assert np.mean(refined[-5:]) < 0.8 * np.mean(refined[:5])
    names = {p.name for p in result.run_dir.iterdir()}
    assert {"config.yaml", "log.txt", "metrics.jsonl", "tensorboard", "checkpoints", "samples"} <= names
    assert [step for step, _ in list_checkpoints(result.run_dir)] == [35, 40]  # the last two kept
    expected = from_dict(tiny_config(tmp_path, 4, max_steps=40, val_every=20)).to_dict()
    assert load_config(result.run_dir / "config.yaml").to_dict() == expected
    validations = [r for r in read_metrics(result.run_dir) if r["kind"] == "val"]
    assert [r["step"] for r in validations] == [20, 40] and all(r["hole_psnr"] > 0 for r in validations)
    assert all(r["resolution"] == 32 for r in validations)
    assert Image.open(result.run_dir / "samples" / "step-0000010.png").size == (4 * 32, 4 * 32)
    assert all(r["lr"] == 1e-3 and r["it_per_s"] > 0 for r in read_metrics(result.run_dir) if r["kind"] == "train")


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    config = tiny_config(tmp_path, max_steps=10, val_every=1000, sample_every=1000)
    full = train(from_dict(config, name="full"))
    config["train"]["max_steps"] = 5
    first = train(from_dict(config, name="parts"))
    config["train"]["max_steps"] = 10
    resumed = train(from_dict(config, name="parts"), resume=first.run_dir)
    assert resumed.run_dir == first.run_dir
    assert _losses(resumed.run_dir) == _losses(full.run_dir)
    for key, value in full.generator.state_dict().items():
        assert torch.equal(value, resumed.generator.state_dict()[key])


def test_a_resumed_run_takes_the_learning_rate_of_its_config(tmp_path):
    config = tiny_config(tmp_path, max_steps=5, val_every=1000, sample_every=1000)
    first = train(from_dict(config, name="tiny"))
    config["train"].update(max_steps=8, lr=3e-4, betas=[0.9, 0.99])
    resumed = train(from_dict(config, name="tiny"), resume=first.run_dir)
    state = load_checkpoint(list_checkpoints(resumed.run_dir)[-1][1])
    assert state["step"] == 8
    for key in ("optimizer_g", "optimizer_d"):
        assert [(g["lr"], tuple(g["betas"])) for g in state[key]["param_groups"]] == [(3e-4, (0.9, 0.99))]


def test_without_the_adversarial_term_the_discriminator_is_left_alone(tmp_path):
    result = train(from_dict(tiny_config(tmp_path, max_steps=6, gan=0.0), name="tiny"))
    records = [r for r in read_metrics(result.run_dir) if r["kind"] == "train"]
    assert records and all("loss_d" not in r and "loss_g_adv" not in r for r in records)
    torch.manual_seed(0)  # the trainer's seed and order of construction: the initial discriminator
    DeepFillV2(width=8)
    untouched = SNPatchGAN(width=8).state_dict()
    saved = load_checkpoint(list_checkpoints(result.run_dir)[-1][1])["discriminator"]
    for key, value in untouched.items():
        assert torch.equal(value, saved[key]), key


@pytest.mark.slow
def test_slim_checkpoint_resumes_in_a_new_run_and_is_never_written_to(tmp_path):
    first = train(from_dict(tiny_config(tmp_path, max_steps=10), name="tiny"))
    kept = tmp_path / "kept" / "tiny.pt"
    assert main(["export-weights", str(first.run_dir), str(tmp_path / "model"), "--keep-checkpoint", str(kept)]) == 0
    state = load_checkpoint(kept)
    assert state["step"] == 10 and "optimizer_g" not in state
    assert all(t.dtype == torch.float16 for t in state["ema"].values() if t.is_floating_point())
    assert [r["step"] for r in state["metrics"] if r["kind"] == "train"] == list(range(1, 11))
    before = kept.read_bytes()
    with pytest.warns(UserWarning, match="no optimiser state"):
        resumed = train(from_dict(tiny_config(tmp_path, max_steps=15), name="tiny"), resume=kept)
    assert resumed.step == 15 and resumed.run_dir != first.run_dir
    steps = [r["step"] for r in read_metrics(resumed.run_dir) if r["kind"] == "train"]
    assert steps == list(range(1, 16))  # the history comes along
    assert kept.read_bytes() == before and list(kept.parent.iterdir()) == [kept]


def test_slim_checkpoint_leaves_out_a_discriminator_never_trained(tmp_path):
    """With `train.gan=0` the discriminator stays at its init: the kept copy drops it, and a resume with the
    adversarial term on starts it afresh."""
    first = train(from_dict(tiny_config(tmp_path, max_steps=4, gan=0.0), name="tiny"))
    kept = tmp_path / "kept.pt"
    assert main(["export-weights", str(first.run_dir), str(tmp_path / "model"), "--keep-checkpoint", str(kept)]) == 0
    state = load_checkpoint(kept)
    assert "discriminator" not in state and {"generator", "ema"} <= set(state)
    with pytest.warns(UserWarning, match="no optimiser state"):
        resumed = train(from_dict(tiny_config(tmp_path, max_steps=6), name="tiny"), resume=kept)
    assert resumed.step == 6
    assert all("loss_d" in r for r in read_metrics(resumed.run_dir) if r["kind"] == "train" and r["step"] > 4)


def test_no_discriminator_leaves_a_trained_one_out_and_needs_a_kept_checkpoint(tmp_path, capsys):
    first = train(from_dict(tiny_config(tmp_path, max_steps=2, val_every=1000, sample_every=1000), name="tiny"))
    assert any("loss_d" in r for r in read_metrics(first.run_dir) if r["kind"] == "train")  # D was trained
    model, kept = tmp_path / "model", tmp_path / "kept.pt"
    assert main(["export-weights", str(first.run_dir), str(model), "--no-discriminator"]) == 1
    assert "--keep-checkpoint" in capsys.readouterr().err and not model.exists()
    command = ["export-weights", str(first.run_dir), str(model), "--keep-checkpoint", str(kept)]
    assert main([*command, "--no-discriminator"]) == 0
    state = load_checkpoint(kept)
    assert "discriminator" not in state and {"generator", "ema"} <= set(state)


@pytest.mark.slow
def test_sigterm_leaves_a_valid_last_checkpoint(tmp_path):
    config = tiny_config(tmp_path, max_steps=100000, save_every=100000, val_every=100000, sample_every=100000)
    path = tmp_path / "tiny.yaml"
    path.write_text(dump_config(from_dict(config)))
    process = subprocess.Popen(
        [sys.executable, "-m", "faceinpaint.cli", "train", str(path)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "runs" / "00000-tiny" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopped at step" in err and "SIGTERM" in err
    (step, checkpoint), *_ = list_checkpoints(metrics.parent)
    state = load_checkpoint(checkpoint)
    assert state["step"] == step >= 3
    assert not list(checkpoint.parent.glob("*.tmp"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, config: dict, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    result = train(from_dict(config, name="ddp"))
    torch.save({"ema": result.generator.state_dict(), "step": result.step}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_keeps_ranks_identical(tmp_path):
    config = tiny_config(tmp_path, max_steps=3, batch_size=2, val_every=1000, sample_every=1000)
    mp.spawn(_ddp_worker, args=(config, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 3
    for key, value in ranks[0]["ema"].items():
        assert torch.equal(value, ranks[1]["ema"][key]), key
    assert len(list((tmp_path / "runs").iterdir())) == 1  # rank 0 alone wrote a run dir


@pytest.mark.slow
def test_export_weights_then_inpaint_and_draw_progress(tmp_path):
    result = train(from_dict(tiny_config(tmp_path, max_steps=10, keep_every=5), name="tiny"))
    assert main(["export-weights", str(result.run_dir), str(tmp_path / "tiny-model"), "--fp16"]) == 0
    inpainter = Inpainter.from_pretrained(tmp_path / "tiny-model")
    card = (tmp_path / "tiny-model" / "README.md").read_text()
    assert "steps: 10" in card and "hole PSNR" in card and "CPU" in card
    face = np.array(Image.open(tmp_path / "faces" / "000.png"))
    hole = np.zeros((32, 32), bool)
    hole[8:20, 8:20] = True
    expected = result.generator(torch.from_numpy(face).permute(2, 0, 1)[None].float() / 127.5 - 1,
                                torch.from_numpy(hole)[None, None].float())  # fmt: skip
    assert expected[1].shape == (1, 3, 32, 32)
    assert inpainter(face, hole).shape == face.shape
    with pytest.raises(Exception, match="already exists"):
        export_weights(result.run_dir, tmp_path / "tiny-model")

    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(hole.astype(np.uint8) * 255).save(masks / "000.png")
    images = tmp_path / "few"
    images.mkdir()
    Image.fromarray(face).save(images / "000.png")
    out = tmp_path / "progress.png"
    assert main(["progress", str(result.run_dir), "--images", str(images), "--masks", str(masks),
                 "--out", str(out)]) == 0  # fmt: skip
    assert Image.open(out).width == 4 * 32 + 3 * 4  # input, steps 5 and 10, ground truth


def test_bad_configs_fail_with_one_clear_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n")
    assert main(["train", str(path), "--dry-run"]) == 1
    assert "unknown key train.learning_rate; valid keys in train: batch_size, lr" in capsys.readouterr().err
    path.write_text("train:\n  batch_size: many\n")
    assert main(["train", str(path), "--dry-run"]) == 1
    assert "train.batch_size: expected int, got 'many'" in capsys.readouterr().err
    path.write_text("optimiser:\n  lr: 1\n")
    assert main(["train", str(path), "--dry-run"]) == 1
    assert "unknown section 'optimiser'" in capsys.readouterr().err
    path.write_text("train: [unclosed\n")
    assert main(["train", str(path), "--dry-run"]) == 1
    assert "not valid YAML" in capsys.readouterr().err
    path.write_text("train:\n  lr: 0.1\n")
    assert main(["train", str(path), "--set", "train.lr"]) == 1
    assert "expected section.key=value" in capsys.readouterr().err
    path.write_text("model:\n  arch: deepfil\n")  # names other tables know: checked when read, choices listed
    assert main(["train", str(path), "--dry-run"]) == 1
    assert "model.arch: 'deepfil' is not one of deepfillv2, twoface" in capsys.readouterr().err
    path.write_text("data:\n  masks: [deepfill, lama-thik]\n")
    assert main(["train", str(path), "--dry-run"]) == 1
    assert "data.masks: 'lama-thik' is not one of deepfill, lama-thin" in capsys.readouterr().err


def test_dry_run_prints_the_resolved_config_with_overrides(capsys):
    config = Path(__file__).parents[1] / "configs" / "deepfillv2_face-256.yaml"
    assert main(["train", str(config), "--dry-run", "--set", "train.lr=2e-4", "--set", "data.masks=[center]"]) == 0
    printed = capsys.readouterr().out
    assert "lr: 0.0002" in printed and "- center" in printed
    assert json.dumps(load_config(config).to_dict()["train"]["betas"]) == "[0.5, 0.999]"


@pytest.mark.slow
def test_structure_losses_train_and_show_in_the_card(tmp_path):
    pytest.importorskip("face_recognition_models", reason="needs faceinpaint[faces]")
    pytest.importorskip("stlpips_pytorch", reason="needs faceinpaint[eval]")
    config = tiny_config(tmp_path, faces=4, max_steps=4, stlpips_weight=1.0, dlib_feature_weight=1.0,
                         feature_matching_weight=10.0, part_l1_weight=2.0, gan_start_step=2, gan_ramp_steps=2,
                         val_every=10, sample_every=10, save_every=10)  # fmt: skip
    config["data"]["masks"] = ["face-parts"]  # holes inside the parts region
    result = train(from_dict(config, name="structure"))
    records = [r for r in read_metrics(result.run_dir) if r["kind"] == "train"]
    assert [("loss_d" in r, "feature_matching" in r) for r in records] == [(False, False)] * 2 + [(True, True)] * 2
    for record in records:
        assert all(np.isfinite(record[key]) and record[key] >= 0 for key in ("stlpips", "dlib_features", "l1_parts"))
    assert main(["export-weights", str(result.run_dir), str(tmp_path / "model")]) == 0
    card = (tmp_path / "model" / "README.md").read_text()
    assert "| D feature matching | ST-LPIPS (loss) | dlib features | L1 face parts | it/s |" in card
    assert "stlpips_weight: 1.0" in card and "gan_ramp_steps: 2" in card


def test_a_negative_loss_weight_is_refused():
    with pytest.raises(InpaintError, match="train.stlpips_weight: must be 0"):
        from_dict({"train": {"stlpips_weight": -1}})


def test_cpu_bf16_falls_back_to_float32_where_the_cpu_has_none(tmp_path, monkeypatch):
    import faceinpaint.training.setup

    monkeypatch.setattr(faceinpaint.training.setup, "cpu_has_bf16", lambda: False)
    config = tiny_config(tmp_path, faces=4, max_steps=1, cpu_bf16=True, gan=0.0, val_every=10, sample_every=10)
    with pytest.warns(UserWarning, match="no AVX512-BF16 or AMX"):
        result = train(from_dict(config, name="fp32"))
    (record,) = [r for r in read_metrics(result.run_dir) if r["kind"] == "train"]
    assert np.isfinite(record["l1_refined"])


def _kill_debris(run_dir: Path, after_step: int) -> None:
    """What `kill -9` leaves: temporary checkpoint and sample files, logs past the last checkpoint, a torn line."""
    (run_dir / "checkpoints" / f".step-{after_step + 5:07d}.pt.k9x2ab.tmp").write_bytes(b"\0" * 1000)
    (run_dir / "samples").mkdir(exist_ok=True)
    (run_dir / "samples" / f".step-{after_step + 5:07d}.png.q81zz0.tmp").write_bytes(b"\0" * 10)
    last = [r for r in read_metrics(run_dir) if r["kind"] == "train"][-1]
    with open(run_dir / "metrics.jsonl", "a") as stream:
        for step in (after_step + 1, after_step + 2):
            stream.write(json.dumps({**last, "step": step}) + "\n")
        stream.write('{"kind": "train", "st')


@pytest.mark.slow
def test_a_resume_after_kill_9_removes_temporary_files_and_logs_each_step_once(tmp_path):
    config = tiny_config(tmp_path, max_steps=10, val_every=5, sample_every=1000)
    first = train(from_dict(config, name="tiny"))
    before = read_metrics(first.run_dir)
    _kill_debris(first.run_dir, after_step=10)
    config["train"]["max_steps"] = 15
    resumed = train(from_dict(config, name="tiny"), resume=first.run_dir)
    assert not [p.name for p in resumed.run_dir.rglob("*.tmp")]
    records = read_metrics(resumed.run_dir)
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 16))
    assert [r["step"] for r in records if r["kind"] == "val"] == [5, 10, 15]
    assert records[: len(before)] == before
    assert main(["export-weights", str(resumed.run_dir), str(tmp_path / "model")]) == 0
    card = (tmp_path / "model" / "README.md").read_text()
    curve = [line.split("|")[1].strip() for line in card.split("## Loss curve")[1].split("## Recipe")[0].splitlines()
             if line.startswith("| ") and line.split("|")[1].strip().isdigit()]  # fmt: skip
    assert len(curve) == len(set(curve)) == 12


@pytest.mark.slow
def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    config = tiny_config(tmp_path, max_steps=10, val_every=1000, sample_every=1000)
    first = train(from_dict(config, name="tiny"))
    latest = list_checkpoints(first.run_dir)[-1][1]
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # written, never synced, power cut
    config["train"]["max_steps"] = 12
    with pytest.warns(UserWarning, match=r"step-0000010\.pt: cannot read it .* resuming from an earlier checkpoint"):
        resumed = train(from_dict(config, name="tiny"), resume=first.run_dir)
    assert resumed.step == 12 and (latest.parent / "step-0000010.pt.broken").is_file()
    assert [r["step"] for r in read_metrics(resumed.run_dir) if r["kind"] == "train"] == list(range(1, 13))
    assert load_checkpoint(latest)["step"] == 10  # saved afresh on the way

    for _, path in list_checkpoints(first.run_dir):
        path.write_bytes(b"not a checkpoint")
    path = tmp_path / "tiny.yaml"
    path.write_text(dump_config(from_dict(config)))
    assert main(["train", str(path), "--resume", str(first.run_dir)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("faceinpaint: ") for line in err)  # two warnings, one error
    assert "step-0000012.pt: cannot read it" in err[0] and "none of its checkpoints can be read" in err[2]
