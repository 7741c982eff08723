"""ONNX and TorchScript export: uint8 parity with PyTorch (<= 2/255), dynamic batch, the onnx backend, the CLI."""

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from faceinpaint.backends.export import (  # noqa: E402
    PARITY_TOLERANCE,
    example_inputs,
    onnx_session,
    run_torch,
    to_onnx,
    to_torchscript,
)
from faceinpaint.cli import main  # noqa: E402
from faceinpaint.errors import InpaintError  # noqa: E402
from faceinpaint.inpainter import Inpainter  # noqa: E402


@pytest.fixture(scope="module")
def tiny() -> Inpainter:
    torch.manual_seed(0)
    return Inpainter.from_config("deepfillv2", {"width": 8}, 32, device="cpu")


@pytest.fixture(scope="module")
def onnx_file(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert to_onnx(tiny, path) <= PARITY_TOLERANCE
    return path


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 4])
def test_onnx_matches_torch_for_any_batch(tiny, onnx_file, batch):
    session = onnx_session(onnx_file)
    assert [i.name for i in session.get_inputs()] == ["image", "mask"]
    image, mask = example_inputs(tiny, batch, seed=5)
    (output,) = session.run(None, {"image": image, "mask": mask})
    expected = run_torch(tiny, image, mask)
    assert output.dtype == np.uint8 and output.shape == (batch, 32, 32, 3)
    assert np.abs(output.astype(int) - expected).max() <= PARITY_TOLERANCE
    known = mask[..., 0] <= 127
    assert np.array_equal(output[known], image[known])  # composited inside the graph


@pytest.mark.slow
def test_torchscript_matches_torch(tiny, tmp_path):
    path = tmp_path / "model.pt"
    assert to_torchscript(tiny, path) <= PARITY_TOLERANCE
    image, mask = example_inputs(tiny, 3, seed=6)
    loaded = torch.jit.load(str(path))
    output = loaded(torch.from_numpy(image), torch.from_numpy(mask)).numpy()
    assert np.abs(output.astype(int) - run_torch(tiny, image, mask)).max() <= PARITY_TOLERANCE


@pytest.mark.slow
def test_onnx_backend_of_the_inpainter(tiny, tmp_path):
    model_dir = tiny.save_pretrained(tmp_path / "tiny")
    torch_version = Inpainter.from_pretrained(model_dir, device="cpu")
    onnx_version = Inpainter.from_pretrained(model_dir, device="cpu", backend="onnx")
    image, mask = example_inputs(tiny, 2, seed=7)
    hole = mask[..., 0] > 127
    expected, got = torch_version(image, hole, align="never"), onnx_version(image, hole, align="never")
    assert np.abs(got.astype(int) - expected).max() <= PARITY_TOLERANCE
    assert np.array_equal(got[~hole], image[~hole])


@pytest.mark.slow
def test_a_reference_model_runs_on_onnxruntime_with_and_without_its_reference(tmp_path, capsys):
    """Two graphs: with the reference (what export-onnx writes) and without (--no-reference)."""
    torch.manual_seed(0)
    twoface = Inpainter.from_config("twoface", {"width": 8, "reference_width": 8}, 32, device="cpu", reference=True)
    onnx = Inpainter("tiny-twoface", twoface.config, twoface.model, device="cpu", backend="onnx")
    image, mask, reference = example_inputs(twoface, 1, seed=8)
    hole = mask[0, ..., 0] > 127
    for other in (reference[0], None):
        expected = twoface(image[0], hole, reference=other, align="never")
        assert np.abs(onnx(image[0], hole, reference=other, align="never").astype(int) - expected).max() <= 2
    model_dir = twoface.save_pretrained(tmp_path / "tiny-twoface")
    assert [i.name for i in onnx._onnx.sessions[True][0].get_inputs()] == ["image", "mask", "reference"]
    out = tmp_path / "m.onnx"
    assert main(["export-onnx", "--weights", str(model_dir), "--out", str(out), "--no-reference"]) == 0
    assert [i.name for i in onnx_session(out).get_inputs()] == ["image", "mask"]
    assert "inputs image, mask;" in capsys.readouterr().out
    assert main(["export-onnx", "--weights", "telea", "--out", str(tmp_path / "t.onnx"), "--no-reference"]) == 1
    assert "takes no reference" in capsys.readouterr().err and not (tmp_path / "t.onnx").exists()


def test_bad_backend_and_classical_export(tmp_path):
    with pytest.raises(InpaintError, match="backend"):
        Inpainter.from_pretrained("telea", backend="tensorflow")
    with pytest.raises(InpaintError, match="classical"):
        to_onnx(Inpainter.from_pretrained("telea"), tmp_path / "x.onnx")


@pytest.mark.slow
def test_cli_export_onnx(tiny, tmp_path, capsys):
    model_dir = tiny.save_pretrained(tmp_path / "tiny")
    assert main(["export-onnx", "--weights", str(model_dir), "--out", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 1000 and "max difference" in capsys.readouterr().out
    assert main(["export-onnx", "--weights", "telea", "--out", str(tmp_path / "t.onnx")]) == 1
    for command in ("export-onnx", "serve"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "example:" in capsys.readouterr().out


@pytest.mark.slow
def test_serve_runs_networks_on_the_cpu_through_onnxruntime_by_default(tiny, tmp_path, monkeypatch, capsys):
    """`serve --backend auto` (the default): onnxruntime for a network with a graph on the CPU (faster per request,
    the export paid once at start), torch for classical methods; --backend torch keeps PyTorch."""
    import faceinpaint.server

    served = {}
    monkeypatch.setattr(faceinpaint.server, "serve", lambda inpainters, *args, **kwargs: served.update(inpainters))
    model_dir = tiny.save_pretrained(tmp_path / "tiny")
    assert main(["serve", "--weights", str(model_dir), "telea", "--device", "cpu"]) == 0
    assert served["tiny"].backend == "onnx" and served["telea"].backend == "torch"
    assert "exporting to ONNX" in capsys.readouterr().out
    served.clear()
    assert main(["serve", "--weights", str(model_dir), "--device", "cpu", "--backend", "torch"]) == 0
    assert served["tiny"].backend == "torch"
