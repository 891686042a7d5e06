"""What ``fgext check`` and ``fgext package`` find by looking inside: links, byte code, native code, plugins.

- Symbolic links are resolved as the kernel would after a plain unzip, link by link: a chain such as
  ``extension/self -> .`` and ``extension/esc -> self/../..`` leaves the unpack folder even though no
  single target does.
- Byte code and native extensions are read for the Python they were built for: the magic number of
  each ``.pyc`` (it changes with every minor version), the ABI tag in each extension module's file
  name (``cpython-312-x86_64-linux-gnu``, ``abi3``), and the ``Tag:`` lines of each wheel's
  ``*.dist-info/WHEEL``.
- Plugins are checked for names that hide a standard-library or bundled module (the plugin folder
  comes after fgext-lib on the import path; the standard library comes first) and for sources that
  do not compile for the target Python.

Each check returns findings as ``(severity, code, message, path)`` tuples.
"""

from __future__ import annotations

import ast
import json
import os
import posixpath
import re
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "MAGIC_NUMBERS",
    "bundled_names",
    "compile_problems",
    "link_findings",
    "native_findings",
    "plugin_findings",
    "stdlib_names",
    "tag_version",
]

Found = Tuple[str, str, str, Optional[str]]

#: the first two bytes (little endian) of a .pyc, per CPython minor version; each value was read
#: from importlib.util.MAGIC_NUMBER of that version's final release
MAGIC_NUMBERS: Dict[Tuple[int, int], int] = {
    (3, 8): 3413, (3, 9): 3425, (3, 10): 3439, (3, 11): 3495, (3, 12): 3531, (3, 13): 3571,
}
_VERSION_OF_MAGIC = {magic: version for version, magic in MAGIC_NUMBERS.items()}
_MAX_HOPS = 40  # the kernel's own limit on links followed while resolving one path
_EXT_MODULE = re.compile(r"\.(cpython-(\d)(\d+)[^./]*|abi3|pypy[^./]*)\.so$")
_PYCACHE = re.compile(r"/__pycache__/[^/]+\.([a-z]+)-(\d)(\d+)(?:\.opt-\d)?\.pyc$")
PLUGINS_DIR = "extension/fgext-plugins/"
LIB_DIR = "extension/fgext-lib/"


def tag_version(tag: str) -> Tuple[int, int]:
    """(3, 9) for ``cpython-39``."""
    digits = tag.rsplit("-", 1)[-1]
    return int(digits[0]), int(digits[1:])


# -- links ------------------------------------------------------------------------------------------------

def _resolve(path: str, links: Mapping[str, str]) -> Optional[str]:
    """Where ``path`` lands after unpacking, following every link in it; None when it leaves the root.

    Raises ValueError for a loop.
    """
    current: List[str] = []
    pending = [part for part in path.split("/") if part]
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if not current:
                return None
            current.pop()
            continue
        candidate = "/".join([*current, part])
        target = links.get(candidate)
        if target is None:
            current.append(part)
            continue
        hops += 1
        if hops > _MAX_HOPS:
            raise ValueError("too many levels of symbolic links")
        if target.startswith("/"):
            return None
        # The target is relative to the link's folder, which is where ``current`` stands.
        pending = [piece for piece in target.split("/") if piece] + pending
    return "/".join(current)


def link_findings(links: Mapping[str, str], names: Iterable[str]) -> List[Found]:
    """Links (``name -> target``) that point outside the unpack folder, and members written through them."""
    found: List[Found] = []
    for name, target in sorted(links.items()):
        try:
            landed = _resolve(name, links)
        except ValueError:
            found.append(("error", "symlink-loop", f"symbolic link to {target!r} never resolves (a loop)", name))
            continue
        if landed is None:
            found.append(("error", "unsafe-symlink", f"symbolic link to {target!r} points outside the zip "
                          "once unpacked (resolved link by link)", name))
    for name in sorted(set(names) - set(links)):
        folder = posixpath.dirname(name.rstrip("/"))
        if not folder or not any(folder == link or folder.startswith(link + "/") for link in links):
            continue
        try:
            landed = _resolve(folder, links)
        except ValueError:
            landed = None
        if landed is None:
            found.append(("error", "path-through-symlink", "unpacking writes this member through a symbolic "
                          "link that leads outside the zip", name))
    return found


# -- byte code and native code -----------------------------------------------------------------------------

def _wheel_tag_ok(tag: str, version: Tuple[int, int], arch: Optional[str]) -> bool:
    """Whether one ``py-abi-platform`` wheel tag can run on CPython ``version`` on Linux ``arch``."""
    parts = tag.split("-")
    if len(parts) != 3:
        return True  # not a tag we can read: say nothing rather than something wrong
    pythons, abis, platforms = (part.split(".") for part in parts)
    nodot = f"{version[0]}{version[1]}"

    def python_ok(item: str) -> bool:
        if item in ("py3", f"py{nodot}", f"cp{nodot}", "py2.py3"):
            return True
        match = re.match(r"^(?:cp|py)(\d)(\d+)$", item)
        # cpXY with abi3 runs on every later CPython; otherwise only on XY itself
        return bool(match and "abi3" in abis and (int(match.group(1)), int(match.group(2))) <= version)

    def abi_ok(item: str) -> bool:
        return item in ("none", "abi3", f"cp{nodot}")

    def platform_ok(item: str) -> bool:
        if item == "any":
            return True
        if not (item.startswith("manylinux") or item.startswith("linux_")):
            return False  # macOS, Windows, musllinux (the sandbox is glibc)
        return arch is None or item.endswith("_" + arch)

    return any(python_ok(p) for p in pythons) and any(abi_ok(a) for a in abis) and \
        any(platform_ok(p) for p in platforms)


def native_findings(members: Mapping[str, bytes], names: Sequence[str], runtime_tag: str,
                    arch: Optional[str] = None) -> List[Found]:
    """Byte code, extension modules and wheels in the zip that the runtime ``runtime_tag`` cannot use.

    ``members`` maps the names of the ``.pyc`` files (their first 4 bytes suffice) and the
    ``*.dist-info/WHEEL`` files to their contents.
    """
    version = tag_version(runtime_tag)
    dotted = f"{version[0]}.{version[1]}"
    wanted_magic = MAGIC_NUMBERS.get(version)
    found: List[Found] = []
    for name in names:
        match = _EXT_MODULE.search(name)
        if match and match.group(2):
            built = (int(match.group(2)), int(match.group(3)))
            platform_part = match.group(1).split("-", 2)[2] if match.group(1).count("-") >= 2 else ""
            if built != version:
                found.append(("error", "foreign-extension-module", f"native extension built for Python "
                              f"{built[0]}.{built[1]}: a Python {dotted} runtime cannot import it", name))
            elif platform_part and (not platform_part.endswith("linux-gnu") or
                                    (arch is not None and not platform_part.startswith(arch))):
                found.append(("error", "foreign-extension-module", f"native extension built for "
                              f"{platform_part}, not Linux {arch or ''}".rstrip(), name))
        elif name.endswith(".pyd") or (name.endswith(".so") and "darwin" in name):
            found.append(("error", "foreign-extension-module", "native extension built for another "
                          "operating system (the sandbox is Linux)", name))
    for name, data in sorted(members.items()):
        if name.endswith(".pyc") and wanted_magic is not None and len(data) >= 4:
            magic = int.from_bytes(data[:2], "little")
            if data[2:4] != b"\r\n" or magic == wanted_magic:
                continue
            cached = _PYCACHE.search("/" + name)
            built_for = _VERSION_OF_MAGIC.get(magic)
            shown = f"Python {built_for[0]}.{built_for[1]}" if built_for else f"magic number {magic}"
            if cached is None:
                found.append(("error", "foreign-bytecode", f"byte code without source, compiled by {shown}: "
                              f"Python {dotted} cannot import it (bad magic number)", name))
            elif (int(cached.group(2)), int(cached.group(3))) == version:
                found.append(("error", "foreign-bytecode", f"named for Python {dotted} but compiled by "
                              f"{shown}: the runtime rejects it and recompiles at every cold start", name))
        elif name.endswith(".dist-info/WHEEL"):
            text = data.decode("utf-8", "replace")
            tags = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]
            if tags and not any(_wheel_tag_ok(tag, version, arch) for tag in tags):
                distribution = name.split("/")[-2][:-len(".dist-info")]
                found.append(("error", "foreign-wheel", f"{distribution} was installed from a wheel for "
                              f"{', '.join(tags[:3])}, which a Python {dotted} runtime on Linux "
                              f"{arch or ''} cannot use".replace("  ", " ").rstrip(), name))
    return found


# -- plugins -------------------------------------------------------------------------------------------------

def stdlib_names() -> FrozenSet[str]:
    """Top-level standard-library module names of this interpreter.

    ``sys.stdlib_module_names`` exists from 3.10 on; on 3.9 the standard library's own folder and the
    built-in modules give the same answer.
    """
    known = getattr(sys, "stdlib_module_names", None)
    if known is not None:
        return frozenset(known)
    names = set(sys.builtin_module_names)
    for folder in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}:
        for folder_path in (Path(folder), Path(folder) / "lib-dynload"):
            if not folder_path.is_dir():
                continue
            for entry in folder_path.iterdir():
                if entry.name in ("site-packages", "dist-packages", "__pycache__"):
                    continue
                stem = entry.name.split(".", 1)[0]
                if (entry.is_dir() and (entry / "__init__.py").exists()) or entry.suffix in (".py", ".so"):
                    names.add(stem)
    return frozenset(names)


def _top_name(relative: str) -> Optional[str]:
    """The importable top-level name of a path below an import root (None for data files)."""
    first, slash, _rest = relative.partition("/")
    if slash:
        return None if first.endswith((".dist-info", ".egg-info", ".data")) or first in ("bin", "__pycache__") \
            else first
    if first.endswith(".py"):
        return first[:-3]
    if first.endswith(".so"):
        return first.split(".", 1)[0]
    return None


def bundled_names(lib_members: Iterable[str]) -> FrozenSet[str]:
    """Top-level module names below fgext-lib (paths relative to it)."""
    return frozenset(name for name in (_top_name(member) for member in lib_members) if name)


def plugin_findings(plugin_members: Iterable[str], bundled: FrozenSet[str]) -> List[Found]:
    """Plugins (paths relative to the plugin folder) named like a standard-library or bundled module."""
    stdlib = stdlib_names()
    found: List[Found] = []
    for name in sorted({top for top in (_top_name(member) for member in plugin_members) if top}):
        where = PLUGINS_DIR + name
        if name in stdlib:
            found.append(("error", "plugin-shadows-stdlib", f"plugin module {name!r} has the name of a "
                          "standard-library module: the standard library comes first on the import path, so "
                          "the plugin never loads (or breaks every import of it); rename it", where))
        elif name in bundled:
            found.append(("error", "plugin-shadows-bundled", f"plugin module {name!r} has the name of a "
                          "module in fgext-lib, which comes first on the import path and hides the plugin; "
                          "rename it", where))
    return found


_COMPILE_SCRIPT = r"""
import json, sys
failed = []
for path, shown in json.loads(sys.argv[1]):
    try:
        with open(path, "rb") as handle:
            compile(handle.read(), shown, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:
        failed.append([shown, "%s: %s" % (type(error).__name__, getattr(error, "msg", None) or error)
                       + (" (line %s)" % error.lineno if getattr(error, "lineno", None) else "")])
print(json.dumps(failed))
"""


def _host_compile(source: bytes, shown: str, version: Tuple[int, int]) -> Optional[str]:
    """Why ``source`` does not compile: this interpreter's compile(), then the target's grammar (best effort)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compile(source, shown, "exec", dont_inherit=True)
            if version < sys.version_info[:2]:
                ast.parse(source, shown, feature_version=version)
        except (SyntaxError, ValueError) as error:
            lineno = getattr(error, "lineno", None)
            line = f" (line {lineno})" if lineno else ""
            return f"{type(error).__name__}: {getattr(error, 'msg', None) or error}{line}"
    return None


def compile_problems(sources: Sequence[Tuple[Path, str]], version: Tuple[int, int],
                     python: Optional[str] = None) -> Tuple[List[Tuple[str, str]], str]:
    """(shown name, reason) for each source that does not compile for Python ``version``, and how it was checked.

    With ``python`` (an interpreter of that version) each file is compiled by it; without, by this
    interpreter's ``compile()`` and ``ast.parse(feature_version=...)``, which catches syntax errors and
    most syntax newer than the target, not everything.
    """
    if not sources:
        return [], "nothing to compile"
    if python is not None:
        payload = json.dumps([[str(path), shown] for path, shown in sources])
        environ = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
        try:
            done = subprocess.run([python, "-I", "-c", _COMPILE_SCRIPT, payload], capture_output=True, text=True,
                                  env=environ, timeout=300, check=False)
            if done.returncode == 0:
                return [(shown, reason) for shown, reason in json.loads(done.stdout.strip().splitlines()[-1])], \
                    f"compiled by {python}"
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
    problems = []
    for path, shown in sources:
        reason = _host_compile(path.read_bytes(), shown, version)
        if reason:
            problems.append((shown, reason))
    host = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if version > sys.version_info[:2]:
        return problems, (f"checked with Python {host}'s compile(), older than {version[0]}.{version[1]}: "
                          "newer syntax may be reported wrongly")
    return problems, f"checked with Python {host}'s compile() for {version[0]}.{version[1]} syntax (best effort)"
