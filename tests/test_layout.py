"""The package's layers (README, Code layout): every import of faceinpaint's own modules, top-level or inside a
function, points to the importer's own folder or a layer below it, and no module takes another's private name."""

import ast
from pathlib import Path

import faceinpaint

PACKAGE = Path(faceinpaint.__file__).parent
# Bottom to top; the folders of one layer do not import each other.
LAYERS = [
    ("errors",),
    ("atomic", "package_data"),
    ("images",),
    ("faces",),
    ("models",),
    ("data",),
    ("config",),
    ("backends",),
    ("weights",),
    ("inpainter",),
    ("inference", "training", "evaluation"),
    ("server",),
    ("cli",),
    ("__main__", "__init__"),  # `python -m faceinpaint`; the public API (`from faceinpaint import Inpainter`)
]


def _unit(module: str) -> str:
    """faceinpaint.training.loop -> training; faceinpaint.images -> images."""
    return module.split(".")[1] if module.count(".") else ""


def _imports() -> list[tuple[str, str, str]]:
    """(importing file, imported module, imported name) for every `from faceinpaint... import` in the package."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("faceinpaint."):
                found += [(str(path.relative_to(PACKAGE)), node.module, alias.name) for alias in node.names]
    return found


def test_imports_point_to_the_same_folder_or_a_layer_below():
    level = {unit: index for index, layer in enumerate(LAYERS) for unit in layer}
    assert set(level) >= {p.stem for p in PACKAGE.iterdir() if p.stem[0] != "_" and p.suffix in ("", ".py")} - {
        "assets", "web"}  # fmt: skip
    upward = []
    for path, module, _ in _imports():
        source, target = Path(path).parts[0].removesuffix(".py"), _unit(module)
        if source == target:
            continue
        if level[target] >= level[source]:
            upward.append(f"{path} imports {module}")
    assert upward == []


def test_no_private_name_is_imported_from_another_module():
    taken = [f"{path}: {module}.{name}" for path, module, name in _imports() if name.startswith("_")]
    assert taken == []
