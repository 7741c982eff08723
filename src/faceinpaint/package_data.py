"""Data files shipped inside installed packages (model weights of the judges and the face tools), found without
importing the package: the one finder every optional network uses."""

import importlib.util
from pathlib import Path

from faceinpaint.errors import InpaintError


def package_file(package: str, relative: str, install: str) -> str:
    """The path of `relative` inside the installed `package`.

    `install` is the pip command that provides it, named in the one-line InpaintError raised when the package or
    the file is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InpaintError(f"this needs the optional package {package!r}: {install}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise InpaintError(f"{path} is missing from the installed {package!r} package; reinstall it: {install}")
    return str(path)
