"""Installed like a library: what pyproject.toml packs, where model names resolve, and (slow tier) the wheel itself
built, installed into a fresh venv outside the repo and run there offline."""

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
from setuptools import find_namespace_packages

import faceinpaint
from faceinpaint import weights
from faceinpaint.cli import main

REPO = Path(__file__).resolve().parents[1]
MAX_WHEEL_BYTES = 40_000_000
MODEL_DIR_FILES = ("config.json", "model.safetensors", "README.md")


def _released_model_dirs() -> list[Path]:
    """The model dirs in the repo's weights/ now (they may be replaced by newer ones: nothing here names them)."""
    return sorted(p for p in (REPO / "weights").iterdir() if weights.is_model_dir(p))


def test_every_folder_of_the_package_is_packed():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml takes Python 3.11")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setuptools["packages"]) == {*find_namespace_packages(str(REPO / "src")), "faceinpaint.bundled_weights"}
    assert setuptools["package-dir"]["faceinpaint.bundled_weights"] == "weights"
    assert weights.PACKAGE_WEIGHTS.name == "bundled_weights"


def test_names_resolve_from_the_environment_then_the_package_then_the_repo(
    tmp_path, monkeypatch, tiny_inpainter, capsys
):
    for folder, names in (("env", ["tiny-a", "tiny-b"]), ("package", ["tiny-a", "tiny-c"])):
        for name in names:
            tiny_inpainter.save_pretrained(tmp_path / folder / name)
    monkeypatch.setenv("FACEINPAINT_WEIGHTS", str(tmp_path / "env"))
    monkeypatch.setattr(weights, "PACKAGE_WEIGHTS", tmp_path / "package")
    sources = weights.model_sources()
    assert sources["telea"] == (weights.SOURCE_BUILT_IN, None)
    assert sources["tiny-a"] == (weights.SOURCE_ENVIRONMENT, tmp_path / "env" / "tiny-a")  # the first one wins
    assert sources["tiny-c"] == (weights.SOURCE_PACKAGE, tmp_path / "package" / "tiny-c")
    for model_dir in _released_model_dirs():
        assert sources[model_dir.name] == (weights.SOURCE_REPO, model_dir)
    assert weights.resolve("tiny-a") == tmp_path / "env" / "tiny-a"
    assert main(["models"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert lines["tiny-c"][-2:] == [weights.SOURCE_PACKAGE, str(tmp_path / "package" / "tiny-c")]
    assert lines["telea"][-3:] == [*weights.SOURCE_BUILT_IN.split(), "-"]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"faceinpaint {faceinpaint.__version__}\n"


@pytest.mark.slow
def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "faceinpaint", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == f"faceinpaint {faceinpaint.__version__}\n"


# The slow tier: the wheel as users get it.


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """`python -m build` of the repo, offline with the venv's setuptools: an sdist, then the wheel built from it."""
    pytest.importorskip("build", reason="building the wheel needs `pip install build` (in the dev extra)")
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def fresh_venv(dist, tmp_path_factory) -> Path:
    """A new venv outside the repo holding only the wheel (pip --no-deps --no-index: nothing is downloaded).

    Its dependencies come from this venv: a .pth file in the new site-packages names this venv's site-packages.
    Python adds a .pth's folders to sys.path after the venv's own site-packages and does not run the .pth files
    inside them, so this venv's editable install of faceinpaint (a .pth naming src/) stays out, and `faceinpaint`
    can only be the wheel's copy; the tests check that too.
    """
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    (wheel,) = dist.glob("*.whl")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    done = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    # Only now the .pth: with it in place pip would see this venv's faceinpaint and try to uninstall it first.
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "faceinpaint-test-dependencies.pth").write_text("".join(f"{path}\n" for path in ours))
    return venv


def run_in(venv: Path, *command: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a command of the fresh venv from a folder outside the repo, without this session's Python settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.pop("FACEINPAINT_WEIGHTS", None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(venv / "bin" / command[0]), *command[1:]], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_wheel_carries_the_package_and_the_model_dirs_only(dist, capsys):
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    with capsys.disabled():
        print(
            f"\n{wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB; {sdist.name}: {sdist.stat().st_size / 1e6:.1f} MB"
        )
    assert wheel.stat().st_size < MAX_WHEEL_BYTES
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src" / "faceinpaint").rglob("*.py")}
    assert sources <= names
    shipped = {n for n in names if n.startswith("faceinpaint/bundled_weights/")}
    expected = {f"faceinpaint/bundled_weights/{d.name}/{f}" for d in _released_model_dirs() for f in MODEL_DIR_FILES}
    assert shipped == expected and expected
    assert not [n for n in names if n.endswith(".pt") or "checkpoints" in n]
    with tarfile.open(sdist) as archive:  # the sdist rebuilds the same wheel: it has weights/, not checkpoints/
        members = [m.split("/", 1)[1] for m in archive.getnames() if "/" in m]
    assert {f"weights/{d.name}/model.safetensors" for d in _released_model_dirs()} <= set(members)
    assert not [m for m in members if m.startswith("checkpoints") or m.endswith(".pt")]


@pytest.mark.slow
def test_installed_wheel_lists_and_runs_its_models_offline(fresh_venv, tmp_path):
    listing = run_in(fresh_venv, "faceinpaint", "models", cwd=tmp_path).stdout
    rows = {line.split()[0]: line.split() for line in listing.splitlines()[1:-1]}
    package = fresh_venv.resolve()
    for model_dir in _released_model_dirs():
        assert rows[model_dir.name][-2] == weights.SOURCE_PACKAGE
        assert Path(rows[model_dir.name][-1]).is_relative_to(package)
    assert run_in(fresh_venv, "python", "-m", "faceinpaint", "models", cwd=tmp_path).stdout == listing
    demo = run_in(fresh_venv, "faceinpaint", "demo", "--device", "cpu", "--out-dir", "demo", cwd=tmp_path).stdout
    assert demo.splitlines()[0] == "model: deepfillv2-face-256"
    assert (tmp_path / "demo" / "out.png").is_file() and (tmp_path / "demo" / "compare.png").is_file()
    version = run_in(fresh_venv, "faceinpaint", "--version", cwd=tmp_path).stdout
    assert version == f"faceinpaint {faceinpaint.__version__}\n"


API_CHECK = """
import importlib.metadata, sys
from pathlib import Path
import numpy as np
import faceinpaint
from faceinpaint import Inpainter
from faceinpaint.inference.demo import load_sample

venv, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
assert Path(faceinpaint.__file__).resolve().is_relative_to(venv), faceinpaint.__file__
distribution = importlib.metadata.distribution("faceinpaint")
assert Path(distribution.locate_file("faceinpaint/__init__.py")).resolve() == Path(faceinpaint.__file__).resolve()
assert distribution.version == faceinpaint.__version__
assert not [p for p in sys.path if p and Path(p).resolve() in (repo, repo / "src")], sys.path
image, hole = load_sample()
for name in ("deepfillv2-face-256", "twoface-face-256"):
    inpainter = Inpainter.from_pretrained(name, device="cpu")
    before = np.asarray(image)
    after = np.asarray(inpainter(image, hole, image if inpainter.uses_reference else None))
    assert np.array_equal(after[~hole], before[~hole]) and not np.array_equal(after[hole], before[hole])
    print(name, "ok")
"""

HUB_CHECK = """
import sys
from pathlib import Path
import numpy as np
import torch

repo = Path(sys.argv[1]).resolve()
inpainter = torch.hub.load(str(repo), "deepfillv2_face", source="local", device="cpu")
import faceinpaint
from faceinpaint.inference.demo import load_sample

assert Path(faceinpaint.__file__).resolve().is_relative_to(repo / "src"), faceinpaint.__file__  # the repo's code
image, hole = load_sample()
before, after = np.asarray(image), np.asarray(inpainter(image, hole))
assert np.array_equal(after[~hole], before[~hole]) and not np.array_equal(after[hole], before[hole])
print(inpainter.name, "ok")
"""


@pytest.mark.slow
def test_installed_wheel_python_api_and_torch_hub(fresh_venv, tmp_path):
    (tmp_path / "api.py").write_text(API_CHECK)
    api = run_in(fresh_venv, "python", str(tmp_path / "api.py"), str(fresh_venv), str(REPO), cwd=tmp_path)
    assert api.stdout.splitlines() == ["deepfillv2-face-256 ok", "twoface-face-256 ok"]
    # torch.hub reads the repo itself (its hubconf.py, src/ and weights/): a fresh process, only the venv's packages.
    (tmp_path / "hub.py").write_text(HUB_CHECK)
    hub = run_in(fresh_venv, "python", str(tmp_path / "hub.py"), str(REPO), cwd=tmp_path)
    assert hub.stdout.splitlines() == ["deepfillv2-face-256 ok"]
