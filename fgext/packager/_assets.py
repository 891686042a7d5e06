"""Files the packager ships with: the launcher script and the per-runtime pip constraints.

They live in the repository (``extension/extensionFgext.sh``, ``packaging/``); ``fgext/packager/_data``
holds symbolic links to them, which setuptools follows when it builds a wheel, so an installed fgext
carries real copies at the same place. Either way one path works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from fgext._errors import PackageError

__all__ = ["constraints_file", "launcher", "source_tree"]

_DATA = Path(__file__).resolve().parent / "_data"


def launcher() -> Path:
    """The launcher script that goes into every zip as ``extension/extension*.sh``."""
    path = _DATA / "extensionFgext.sh"
    if not path.is_file():
        raise PackageError(f"the fgext launcher is missing from this installation ({path}); "
                           "reinstall fgext")
    return path


def constraints_file(runtime_name: str) -> Optional[Path]:
    """The pip constraints the project tested for ``runtime_name``, if there are any."""
    path = _DATA / "packaging" / "constraints" / f"{runtime_name}.txt"
    return path if path.is_file() else None


def source_tree() -> Optional[Path]:
    """The root of the fgext checkout this code runs from, or None for an installed fgext."""
    root = Path(__file__).resolve().parent.parent.parent
    pyproject = root / "pyproject.toml"
    if (root / "fgext" / "__init__.py").is_file() and pyproject.is_file():
        text = pyproject.read_text(encoding="utf-8", errors="replace")
        if 'name = "fgext"' in text:
            return root
    return None
