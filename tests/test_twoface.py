"""Two-Face: the reference-guided generator, its training (references, dropout, local D, identity), export."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceinpaint.cli import main
from faceinpaint.config import from_dict, load_config
from faceinpaint.errors import InpaintError
from faceinpaint.inpainter import Inpainter
from faceinpaint.models import DeepFillV2, TwoFace
from faceinpaint.training.batches import References, hole_crops, jittered, reference_batch
from faceinpaint.training.checkpoint import list_checkpoints, load_checkpoint, read_metrics
from faceinpaint.training.loop import train

CONFIGS = Path(__file__).parents[1] / "configs"


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tiny(seed: int = 0) -> TwoFace:
    """A width-8 TwoFace whose zero-initialised reference outputs are made non-zero, so the reference matters."""
    torch.manual_seed(seed)
    model = TwoFace(width=8, reference_width=8, identity_dim=16)
    for layer in (model.reference_attention.out, model.film):
        torch.nn.init.normal_(layer.weight, std=0.2)
    return model.eval()


def batch_inputs(size: int = 32) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(1)
    image, reference = torch.rand(2, 3, size, size) * 2 - 1, torch.rand(2, 3, size, size) * 2 - 1
    mask = torch.zeros(2, 1, size, size)
    mask[..., 8:24, 6:22] = 1
    return image, mask, reference


def test_parameter_count_and_registry(capsys):
    model, deepfill = TwoFace(), DeepFillV2()
    with capsys.disabled():
        print(f"\nTwoFace(width=48, reference_width=32): {_count(model) / 1e6:.2f}M parameters "
              f"(DeepFillv2 {_count(deepfill) / 1e6:.2f}M)")  # fmt: skip
    assert _count(model) == pytest.approx(4.66e6, rel=0.01)
    assert type(Inpainter.from_config("twoface", {"width": 8, "reference_width": 8}, 32).model) is TwoFace
    # The inherited DeepFillv2 part keeps its names and shapes: its weights load into a TwoFace.
    shared = {key: value.shape for key, value in deepfill.state_dict().items()}
    assert all(model.state_dict()[key].shape == shape for key, shape in shared.items())


def test_shapes_and_ranges_with_and_without_a_reference():
    model = _tiny()
    image, mask, reference = batch_inputs()
    with torch.no_grad():
        for outputs in (model(image, mask), model(image, mask, reference)):
            for out in outputs:
                assert out.shape == image.shape and out.dtype == torch.float32
                assert torch.isfinite(out).all() and out.abs().max() <= 1.0
    with pytest.raises(ValueError, match="does not fit"):
        model(image, mask, reference[:1])


def test_the_hole_depends_on_the_reference_and_not_on_hidden_pixels():
    model = _tiny()
    image, mask, reference = batch_inputs()
    with torch.no_grad():
        first = model(image, mask, reference)[1]
        other = model(image, mask, reference.flip(-1).roll(5, -2))[1]
        without = model(image, mask)[1]
        hidden = model(image + 3 * mask, mask, reference)[1]
    hole = mask.expand_as(first) > 0
    assert (first - other)[hole].abs().mean() > 1e-3
    assert (first - without)[hole].abs().mean() > 1e-3
    torch.testing.assert_close(first, hidden)


def test_a_fresh_model_ignores_the_reference_and_the_flag_drops_it_exactly():
    torch.manual_seed(0)
    fresh = TwoFace(width=8, reference_width=8).eval()  # zero-initialised attention output and FiLM
    image, mask, reference = batch_inputs()
    with torch.no_grad():
        torch.testing.assert_close(fresh(image, mask, reference)[1], fresh(image, mask)[1])
        model = _tiny()
        flags = torch.tensor([True, False])
        mixed = model(image, mask, reference, has_reference=flags)[1]
        torch.testing.assert_close(mixed[0], model(image, mask, reference)[1][0])
        assert torch.equal(mixed[1], model(image, mask)[1][1])  # not close: equal


def test_references_are_same_identity_never_the_image_itself():
    identities = torch.tensor([2, 0, 2, 1, 0, 2, 0])  # identity 1 has a single photo
    table = References(identities)
    generator = torch.Generator().manual_seed(0)
    index = torch.arange(7).repeat(30)
    picks, available = table.pick(index, generator)
    assert available.tolist() == [i != 3 for i in index.tolist()]
    assert (identities[picks] == identities[index]).all()
    assert ((picks != index) == available).all()
    assert set(picks[index == 0].tolist()) == {2, 5}  # uniform over the others


def test_self_references_are_the_photo_itself_jittered_and_off_by_default():
    """train.self_reference: the sample's own photo, re-lit and moved, stands in for its reference (single-photo
    people included); at 0 the draws, and so the batch, are exactly those of runs without the option."""
    identities = torch.tensor([2, 0, 2, 1, 0, 2, 0])  # identity 1 has a single photo
    coarse = (np.random.default_rng(0).random((7, 8, 8, 3)) * 255).astype(np.uint8)
    smooth = np.stack([np.asarray(Image.fromarray(one).resize((32, 32))) for one in coarse])
    images, index = torch.from_numpy(smooth).permute(0, 3, 1, 2).contiguous(), torch.tensor([0, 3, 5, 6])
    table = References(identities)

    def batch(**train_args):
        cfg = from_dict({"model": {"arch": "twoface"}, "data": {"flip": False}, "train": train_args})
        return reference_batch(images, table, index, 7, 0, cfg, "cpu")

    plain, dropped = batch(), batch(self_reference=0.0)
    assert all(torch.equal(a, b) for a, b in zip(plain, dropped, strict=True))
    reference, available, given, picks = batch(self_reference=1.0, reference_dropout=0.0)
    assert torch.equal(picks, index) and available.all() and given.all()  # identity 1 too
    own = images[index].float() / 127.5 - 1
    assert 0.01 < (reference - own).abs().mean() < 0.5  # moved and re-lit, not copied
    assert np.corrcoef(reference.flatten(), own.flatten())[0, 1] > 0.6
    generator = torch.Generator().manual_seed(0)
    assert jittered(own, generator).shape == own.shape and jittered(own, generator).abs().max() <= 1
    with pytest.raises(InpaintError, match="self_reference: a probability"):
        from_dict({"model": {"arch": "twoface"}, "train": {"self_reference": 1.5}})


def test_hole_crops_frame_the_hole():
    mask = torch.zeros(2, 1, 128, 128)
    mask[:, :, 48:80, 48:80] = 1  # the seed's centre hole
    crops = hole_crops(mask, mask, 64)
    assert crops.shape == (2, 1, 64, 64) and crops[..., 1:-1, 1:-1].min() > 0.99  # the hole itself (2x upsampled)
    mask[1] = 0
    mask[1, :, 0:4, 120:128] = 1  # a corner hole: the crop stays inside the image
    assert hole_crops(mask, mask, 64)[1].mean() > 0


def make_identities(root: Path, identities: int = 3, photos: int = 4, size: int = 32) -> Path:
    """root/<identity>/<n>.png: each identity a face-like ellipse of its own colour, photos varying in place."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    for person in range(identities):
        colour, background = rng.uniform(0.3, 1.0, 3), rng.uniform(0.0, 0.5, 3)
        (root / f"person{person}").mkdir(parents=True)
        for number in range(photos):
            centre = 0.5 + rng.uniform(-0.08, 0.08, 2)
            inside = ((x - centre[0]) / 0.3) ** 2 + ((y - centre[1]) / 0.4) ** 2 < 1
            eyes = (np.abs(y - centre[1] + 0.1) < 0.04) & (np.abs(np.abs(x - centre[0]) - 0.12) < 0.05)
            pixels = np.where(
                inside[..., None], colour * (1 - 0.7 * eyes[..., None]), background * (0.5 + y[..., None])
            )
            Image.fromarray((pixels * 255).astype(np.uint8)).save(root / f"person{person}" / f"{number}.png")
    return root


def tiny_config(tmp_path: Path, **train_args) -> dict:
    folder = tmp_path / "faces"
    if not folder.exists():
        make_identities(folder)
    return {
        "model": {"arch": "twoface", "width": 8, "resolution": 32, "discriminator_width": 8, "reference_width": 8,
                  "identity_dim": 16},
        "data": {"train": str(folder), "val": str(folder), "masks": ["deepfill", "lama-thick"], "workers": 1},
        "train": {"batch_size": 4, "lr": 1e-3, "max_steps": 4, "log_every": 1, "sample_every": 2, "val_every": 4,
                  "val_images": 8, "save_every": 2, "keep_checkpoints": 2, "local_gan": 1.0, "identity_weight": 0.0,
                  "reference_dropout": 0.5, "run_root": str(tmp_path / "runs"), **train_args},
    }  # fmt: skip


def _losses(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "it_per_s"} for r in read_metrics(run_dir) if r["kind"] == "train"]


@pytest.mark.slow
def test_training_resumes_exactly_and_exports_a_reference_model(tmp_path):
    config = tiny_config(tmp_path)
    full = train(from_dict(config, name="full"))
    records = _losses(full.run_dir)
    assert len(records) == 4 and {"loss_d_local", "loss_g_local"} <= set(records[0])
    assert all(np.isfinite(v) for r in records for v in r.values() if isinstance(v, float))
    (validation,) = [r for r in read_metrics(full.run_dir) if r["kind"] == "val"]
    assert {"hole_l1", "hole_psnr", "hole_l1_reference", "hole_psnr_reference"} <= set(validation)
    assert Image.open(full.run_dir / "samples" / "step-0000002.png").size == (5 * 32, 4 * 32)  # + reference column

    config["train"]["max_steps"] = 2
    first = train(from_dict(config, name="parts"))
    config["train"]["max_steps"] = 4
    resumed = train(from_dict(config, name="parts"), resume=first.run_dir)
    assert _losses(resumed.run_dir) == records
    for key, value in full.generator.state_dict().items():
        assert torch.equal(value, resumed.generator.state_dict()[key]), key

    out = tmp_path / "twoface-tiny"
    assert main(["export-weights", str(full.run_dir), str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["arch"] == "twoface" and saved["reference"] is True
    assert saved["args"] == {"width": 8, "reference_width": 8, "identity_dim": 16}
    assert "Reference-guided" in (out / "README.md").read_text()
    inpainter = Inpainter.from_pretrained(out, device="cpu")
    assert inpainter.uses_reference
    face = np.array(Image.open(tmp_path / "faces" / "person0" / "0.png"))
    reference = np.array(Image.open(tmp_path / "faces" / "person0" / "1.png"))
    hole = np.zeros((32, 32), bool)
    hole[10:22, 8:24] = True
    guided, plain = inpainter(face, hole, reference=reference, align="never"), inpainter(face, hole, align="never")
    assert guided.shape == plain.shape == face.shape
    assert (guided[~hole] == face[~hole]).all()


def test_twoface_starts_from_deepfill_weights_and_reproduces_them(tmp_path, capsys):
    torch.manual_seed(3)
    deepfill = Inpainter("tiny", {"arch": "deepfillv2", "args": {"width": 8}, "resolution": 32}, DeepFillV2(width=8))
    deepfill.save_pretrained(tmp_path / "deepfill-tiny", dtype=torch.float32)
    config = tiny_config(tmp_path, max_steps=1, lr=0.0, local_gan=0.0, gan=0.0, sample_every=10, val_every=10,
                         init_from=str(tmp_path / "deepfill-tiny"))  # fmt: skip
    result = train(from_dict(config, name="warm"))
    assert "generator starts from" in capsys.readouterr().err
    image, mask, reference = batch_inputs()
    with torch.no_grad():  # the reference branch starts silent: Two-Face begins as exactly that DeepFillv2
        expected = deepfill.model(image, mask)[1]
        torch.testing.assert_close(result.generator.float()(image, mask, reference)[1], expected)

    config["train"]["init_from"] = str(result.run_dir)  # a Two-Face checkpoint cannot start a DeepFillv2
    config["model"]["arch"] = "deepfillv2"
    with pytest.raises(InpaintError, match="do not fit this model"):
        train(from_dict(config, name="backwards"))


def test_reference_branch_learning_rate_scale(tmp_path):
    """train.reference_lr_scale puts exactly the modules DeepFillv2 lacks in a second Adam group; a run cannot
    resume with another group layout (one line), and the scale must be positive."""
    config = tiny_config(tmp_path, max_steps=2, reference_lr_scale=5.0, sample_every=10, val_every=10)
    result = train(from_dict(config, name="scaled"))
    state = load_checkpoint(list_checkpoints(result.run_dir)[-1][1])
    inherited, branch = state["optimizer_g"]["param_groups"]
    assert (inherited["lr"], branch["lr"]) == (1e-3, 5e-3)
    names = [name for name, _ in result.generator.named_parameters()]
    deepfill_names = {name for name, _ in DeepFillV2(width=8).named_parameters()}
    assert [names[i] for i in inherited["params"]] == [name for name in names if name in deepfill_names]
    present = {name for name in TwoFace.REFERENCE_MODULES if getattr(result.generator, name) is not None}
    assert present == set(TwoFace.REFERENCE_MODULES) - {"prior_inputs"}  # v1: no prior convolutions
    assert {names[i].split(".")[0] for i in branch["params"]} == present

    config["train"].update(max_steps=3, reference_lr_scale=1.0)
    with pytest.raises(InpaintError, match="2 parameter group"):
        train(from_dict(config, name="scaled"), resume=result.run_dir)
    config["train"]["reference_lr_scale"] = 0.0
    with pytest.raises(InpaintError, match="reference_lr_scale: must be above 0"):
        from_dict(config, name="zero")


def test_identity_loss_trains_with_dlibs_network(tmp_path):
    pytest.importorskip("face_recognition_models")
    config = tiny_config(tmp_path, batch_size=2, max_steps=1, identity_weight=0.1, local_gan=0.0, save_every=10,
                         sample_every=10, val_every=10)  # fmt: skip
    config["data"]["val"] = ""
    result = train(from_dict(config, name="identity"))
    (record,) = _losses(result.run_dir)
    assert 0.0 <= record["identity_target"] < 2.0 and 0.0 <= record["identity_reference"] < 2.0
    assert "loss_d_local" not in record
    assert main(["export-weights", str(result.run_dir), str(tmp_path / "identity-model")]) == 0
    card = (tmp_path / "identity-model" / "README.md").read_text()  # the loss curve shows the identity terms
    header = "| step | L1 coarse | L1 refined | G adversarial | D hinge | identity to truth | identity to reference |"
    assert header in card and f"| {record['identity_target']:.4f} | {record['identity_reference']:.4f} |" in card


@pytest.mark.parametrize("name", ["twoface_face-256", "twoface_seed-128"])
def test_presets_load_and_dry_run(name, capsys):
    path = CONFIGS / f"{name}.yaml"
    assert main(["train", str(path), "--dry-run"]) == 0
    assert "arch: twoface" in capsys.readouterr().out
    config = load_config(path)
    assert config.train.local_gan > 0 and config.train.identity_weight > 0
    if name == "twoface_seed-128":
        assert config.model.resolution == 128 and config.data.masks == ("center",) and config.data.layout == "twoface"
    else:
        assert config.train.reference_dropout > 0 and "deepfill" in config.data.masks


def test_inference_attention_in_slices_equals_the_whole(monkeypatch):
    """Without autograd, the reference attention runs its queries in slices (memory); the result must not change."""
    from faceinpaint.models import twoface

    torch.manual_seed(0)
    attention = twoface.ReferenceAttention(32, 16)
    torch.nn.init.normal_(attention.out.weight)  # a fresh output projection is zero: make the output visible
    features, reference = torch.randn(3, 32, 16, 16), torch.randn(3, 16, 8, 8)
    with torch.no_grad():
        whole = attention(features, reference)
        monkeypatch.setattr(twoface, "ATTENTION_ELEMENTS", 3 * 4 * 64 * 10)  # 10 query rows per slice: 26 slices
        sliced = attention(features, reference)
    assert whole.abs().max() > 0
    torch.testing.assert_close(sliced, whole, rtol=0, atol=1e-6)


def test_attention_takes_the_fused_cpu_kernel_and_matches_plain_softmax_attention():
    """Queries, keys and values are dense in their last dimension (the CPU flash kernel's condition; a transposed
    view fell back to the math path, 3.4x slower), and the result is softmax(q k^T / sqrt(d)) v."""
    from faceinpaint.models import twoface

    torch.manual_seed(0)
    attention = twoface.ReferenceAttention(32, 16)
    torch.nn.init.normal_(attention.out.weight)
    features, reference = torch.randn(2, 32, 8, 8), torch.randn(2, 16, 4, 4)
    tokens = attention._tokens(attention.value(reference))
    assert tokens.shape == (2, 4, 16, 8) and tokens.stride(-1) == 1
    with torch.no_grad():
        where = twoface.coordinate_features(8, 8, 4, features).expand(2, -1, -1, -1)
        where_ref = twoface.coordinate_features(4, 4, 4, reference).expand(2, -1, -1, -1)
        q = attention._tokens(attention.query(torch.cat([features, where], 1)))
        k = attention._tokens(attention.key(torch.cat([reference, where_ref], 1)))
        v = attention._tokens(attention.value(reference))
        plain = torch.softmax(q @ k.transpose(2, 3) / 8**0.5, dim=-1) @ v  # (B, heads, 64, 8)
        expected = attention.out(plain.transpose(2, 3).reshape(2, 32, 8, 8))
        torch.testing.assert_close(attention(features, reference), expected, rtol=1e-5, atol=1e-5)


def test_one_reference_serves_every_face_of_a_batch_in_one_face_calls():
    """On a CPU the Inpainter runs one face per network call (faster per face); a single reference photo must
    still reach every face of a larger batch, as if each face were inpainted on its own."""
    config = {"arch": "twoface", "args": {"width": 8, "reference_width": 8, "identity_dim": 16}, "resolution": 32,
              "reference": True}  # fmt: skip
    inpainter = Inpainter("tiny-twoface", config, _tiny(), device="cpu")
    assert inpainter.batch_size == 1
    images, mask, references = batch_inputs()
    images = torch.cat([images, images.flip(-1)])  # 4 faces, 1 reference
    together = inpainter(images, mask[:1], references[:1], align="never")
    for index in range(4):
        alone = inpainter(images[index], mask[0, 0], references[0], align="never")
        torch.testing.assert_close(together[index], alone, rtol=0, atol=1e-6)
