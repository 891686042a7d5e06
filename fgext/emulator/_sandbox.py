"""The emulated sandbox's file system: the dependency unpacked safely, and the extension scripts found.

A zip is unpacked into a fresh temporary tree shaped like the real sandbox (``function/`` is the working
directory, ``function/code/`` the code root where dependencies land); a directory target is used in
place as the code root, so a source checkout runs without copying. Nothing in a zip may land outside
the code root: absolute names, ``..`` components and symlinks are refused before a byte is written.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import List, Optional, Union

from fgext._errors import ConfigError

__all__ = ["MAX_FILES", "MAX_UNPACKED_BYTES", "Sandbox", "find_scripts", "prepare_sandbox", "safe_unpack"]

# The platform's documented limits for one private dependency (spec section 6); they also bound
# what a hostile zip (a "zip bomb") can make the emulator write.
MAX_UNPACKED_BYTES = 300 * 1024 * 1024
MAX_FILES = 30_000


@dataclass
class Sandbox:
    """Where an emulated instance lives; :meth:`cleanup` removes what the emulator created."""

    root: Path
    cwd: Path
    code_root: Path
    scripts: List[Path] = field(default_factory=list)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _checked_name(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename
    if "\\" in name:
        raise ConfigError(f"zip entry {name!r} uses a backslash; zip names must use '/'")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise ConfigError(f"zip entry {name!r} has an absolute path")
    if ".." in path.parts:
        raise ConfigError(f"zip entry {name!r} escapes the target directory ('..')")
    if not path.parts:
        raise ConfigError(f"zip entry {name!r} has an empty name")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ConfigError(f"zip entry {name!r} is a symbolic link; the platform does not allow them")
    return path


def safe_unpack(zip_path: Path, dest: Path) -> None:
    """Unpack ``zip_path`` into ``dest``, keeping Unix file modes; refuse anything unsafe up front."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ConfigError(f"target {str(zip_path)!r} is not a readable zip: {error}") from None
    with archive:
        infos = archive.infolist()
        try:
            names = [_checked_name(info) for info in infos]
        except ConfigError as error:  # name the user's zip, not where it is being unpacked
            raise ConfigError(f"{zip_path}: {error}") from None
        if len(infos) > MAX_FILES:
            raise ConfigError(f"{zip_path} has {len(infos)} entries; the platform allows at most {MAX_FILES}")
        total = sum(info.file_size for info in infos)
        if total > MAX_UNPACKED_BYTES:
            raise ConfigError(
                f"{zip_path} unpacks to {total} bytes; the platform allows at most {MAX_UNPACKED_BYTES}"
            )
        root = dest.resolve()
        for info, name in zip(infos, names):
            target = (root / Path(*name.parts)).resolve()
            if root != target and root not in target.parents:
                raise ConfigError(f"{zip_path}: zip entry {info.filename!r} escapes the target directory")
            mode = (info.external_attr >> 16) & 0o7777
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink)
            # Zips made on Windows carry no Unix mode (create_system 0): give them a plain file's.
            if info.create_system == 3 and mode:
                target.chmod(mode & 0o777)
            else:
                target.chmod(0o644)


def find_scripts(code_root: Path, shown: Optional[str] = None) -> List[Path]:
    """Every ``extension/extension*.sh`` the platform would start, in name order.

    ``shown`` is what errors call the target: the user's zip, not the temporary tree it was unpacked in.
    """
    name = shown or str(code_root)
    folder = code_root / "extension"
    if not folder.is_dir():
        raise ConfigError(f"{name} has no extension/ folder: a dependency zip must contain one")
    scripts = sorted(
        path for path in folder.iterdir()
        if path.name.startswith("extension") and path.name.endswith(".sh") and path.is_file()
    )
    if not scripts:
        raise ConfigError(f"{name}: extension/ holds no extension*.sh script for the platform to start")
    return scripts


def prepare_sandbox(target: Union[str, Path]) -> Sandbox:
    """Lay out a sandbox for ``target`` (a dependency zip or a directory with ``extension/``)."""
    source = Path(target).expanduser()
    if not source.exists():
        raise ConfigError(f"target {str(target)!r} does not exist")
    root = Path(tempfile.mkdtemp(prefix="fgext-emulate-"))
    try:
        cwd = root / "function"
        for folder in (cwd, root / "home", root / "tmp", root / "log", root / "runtime"):
            folder.mkdir(parents=True)
        if source.is_dir():
            code_root = source.resolve()
        else:
            code_root = cwd / "code"
            code_root.mkdir()
            safe_unpack(source, code_root)
        sandbox = Sandbox(root=root, cwd=cwd, code_root=code_root)
        sandbox.scripts = find_scripts(code_root, shown=str(target))
        return sandbox
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
