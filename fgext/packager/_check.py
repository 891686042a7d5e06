"""``fgext check``: validate any extension zip against FunctionGraph's rules, naming every problem.

Errors are what the platform refuses or what keeps the extension from starting; warnings are what
works but costs (an upload through OBS, byte code the sandbox cannot use). Only errors fail the check,
unless ``strict``.
"""

from __future__ import annotations

import re
import stat
import sys
import tempfile
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from fgext._errors import ConfigError
from fgext.packager._inspect import (
    LIB_DIR,
    PLUGINS_DIR,
    bundled_names,
    compile_problems,
    link_findings,
    native_findings,
    plugin_findings,
    tag_version,
)
from fgext.packager._limits import (
    DEPENDENCY_NAME,
    MAX_FILES,
    MAX_INLINE_BYTES,
    MAX_UNPACKED_BYTES,
    human_size,
)

__all__ = ["Finding", "check_zip"]

_LAUNCHER = re.compile(r"^extension/(extension[^/]*\.sh)$")
_MAX_EXTENSIONS = 10
_PYC = re.compile(r"/__pycache__/[^/]+\.([a-z]+-\d+)(?:\.opt-\d)?\.pyc$")


@dataclass(frozen=True)
class Finding:
    """One problem (``error``) or cost (``warning``) found in a zip."""

    severity: str
    code: str
    message: str
    path: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f" {self.path}:" if self.path else ""
        return f"{self.severity} [{self.code}]{where} {self.message}"


def _mode(info: zipfile.ZipInfo) -> int:
    return (info.external_attr >> 16) & 0xFFFF if info.create_system == 3 else 0


def _path_findings(info: zipfile.ZipInfo, out: List[Finding]) -> None:
    name = info.filename
    if "\\" in name:
        out.append(Finding("error", "backslash-path", "the name uses '\\' as a separator (zipped on "
                           "Windows?): Linux unpacks it as one file with backslashes in its name", name))
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        out.append(Finding("error", "absolute-path", "absolute path: the platform unpacks relative to its "
                           "code directory; zip relative paths", name))
    if ".." in name.replace("\\", "/").split("/"):
        out.append(Finding("error", "path-traversal", "'..' in the path points outside the unpack folder", name))
    if any(part.endswith("~") for part in name.rstrip("/").split("/")):
        out.append(Finding("error", "backup-name", "the platform refuses file names ending in '~' "
                           "(editor backups): remove them", name))
    if info.flag_bits & 0x1:
        out.append(Finding("error", "encrypted", "encrypted member: the platform cannot unpack it", name))
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        out.append(Finding("warning", "compression", f"compression method {info.compress_type} is not "
                           "stored/deflate, which every unzip supports; re-zip with deflate", name))


def _symlink_findings(archive: zipfile.ZipFile, infos: List[zipfile.ZipInfo], out: List[Finding]) -> None:
    links = {info.filename.rstrip("/"): archive.read(info).decode("utf-8", errors="replace")
             for info in infos if stat.S_ISLNK(_mode(info))}
    if links:
        out.extend(Finding(*found) for found in link_findings(links, [info.filename for info in infos]))


def _interpreter(version: Tuple[int, int]) -> Optional[str]:
    """An interpreter of ``version`` on this machine, to compile plugins as the runtime would."""
    from fgext.packager._runtimes import RUNTIMES, find_interpreter

    runtime = RUNTIMES.get(f"Python{version[0]}.{version[1]}")
    return find_interpreter(runtime) if runtime is not None else None


def _runtime_findings(archive: zipfile.ZipFile, names: List[str], out: List[Finding], runtime_tag: Optional[str],
                      arch: Optional[str]) -> None:
    """Plugins that shadow or do not compile; with a runtime, byte code and native code built for another."""
    lib = [name[len(LIB_DIR):] for name in names if name.startswith(LIB_DIR)]
    plugins = [name[len(PLUGINS_DIR):] for name in names if name.startswith(PLUGINS_DIR)]
    out.extend(Finding(*found) for found in plugin_findings(plugins, bundled_names(lib)))
    version = tag_version(runtime_tag) if runtime_tag else (sys.version_info[0], sys.version_info[1])
    with tempfile.TemporaryDirectory(prefix="fgext-check-") as scratch:
        sources = []
        for index, name in enumerate(n for n in names if n.startswith(PLUGINS_DIR) and n.endswith(".py")):
            copy = Path(scratch) / f"{index}.py"
            copy.write_bytes(archive.read(name))
            sources.append((copy, name))
        python = _interpreter(version) if sources else None
        problems, how = compile_problems(sources, version, python)
        # Only the target's own interpreter, or one at least as new, can tell for sure.
        severity = "error" if python is not None or version <= sys.version_info[:2] else "warning"
        for shown, reason in problems:
            out.append(Finding(severity, "plugin-does-not-compile", f"{reason}; {how}", shown))
    if runtime_tag is None:
        return
    members = {}
    for name in names:
        if name.endswith(".pyc"):
            with archive.open(name) as handle:
                members[name] = handle.read(4)
        elif name.endswith(".dist-info/WHEEL"):
            members[name] = archive.read(name)[:65536]
    out.extend(Finding(*found) for found in native_findings(members, names, runtime_tag, arch))


def _launcher_findings(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out: List[Finding]) -> None:
    name = info.filename
    mode = _mode(info)
    if mode == 0:
        out.append(Finding("error", "launcher-no-mode", "stored without Unix mode bits (zipped on Windows "
                           "or by a tool that drops them): the platform cannot execute it; zip on Linux "
                           "with `chmod 755` first, or use `fgext package`", name))
    elif not mode & 0o111:
        out.append(Finding("error", "launcher-not-executable", f"mode {mode & 0o777:04o} has no execute "
                           "bit: the platform cannot run it; chmod 755 it before zipping", name))
    data = archive.read(info)
    if data.startswith(b"\xef\xbb\xbf"):
        out.append(Finding("error", "launcher-bom", "starts with a UTF-8 byte order mark, so the kernel "
                           "does not see the '#!' line; save it without BOM", name))
        data = data[3:]
    if not data.startswith(b"#!"):
        out.append(Finding("error", "launcher-no-shebang", "the first line is not a '#!' interpreter line "
                           "(e.g. #!/bin/sh): the platform executes the file directly", name))
    if b"\r\n" in data:
        first = data.split(b"\n", 1)[0]
        detail = " (the '#!' line too: the kernel looks for an interpreter named '...\\r')" \
            if first.endswith(b"\r") else ""
        out.append(Finding("error", "launcher-crlf", "Windows line endings (CRLF)" + detail + "; convert "
                           "with dos2unix", name))


def _bytecode_findings(names: List[str], out: List[Finding], runtime_tag: Optional[str]) -> None:
    tags = Counter(match.group(1) for name in names for match in [_PYC.search("/" + name)] if match)
    if runtime_tag is not None:
        for tag, count in sorted(tags.items()):
            if tag != runtime_tag and runtime_tag not in tags:
                out.append(Finding("error", "foreign-bytecode", f"{count} .pyc file(s) for {tag} and none for "
                                   f"{runtime_tag}: the zip was built for another Python (fgext package "
                                   "--runtime chooses the target)"))
            elif tag != runtime_tag:
                out.append(Finding("warning", "foreign-bytecode", f"{count} .pyc file(s) for {tag}, which "
                                   f"a {runtime_tag} runtime never uses: they only add size"))
    elif len(tags) > 1:
        out.append(Finding("warning", "mixed-bytecode", "byte code for several interpreters ("
                           f"{', '.join(sorted(tags))}): each runtime uses only its own"))


def _timestamp_pycs(archive: zipfile.ZipFile, names: List[str], out: List[Finding]) -> None:
    stale = 0
    for name in names:
        if _PYC.search("/" + name):
            with archive.open(name) as handle:
                header = handle.read(8)
            if len(header) == 8 and int.from_bytes(header[4:8], "little") == 0:
                stale += 1
    if stale:
        out.append(Finding("warning", "timestamp-bytecode", f"{stale} .pyc file(s) are timestamp-based: "
                           "after unpacking they no longer match their sources and the read-only sandbox "
                           "recompiles those modules at every cold start; compile with "
                           "--invalidation-mode unchecked-hash (fgext package does)"))


# What fgext.function needs beside itself to export (docs/function.md): the SDK and the OTLP encoder.
_HELPER_NEEDS = {"opentelemetry/sdk/trace/__init__.py": "opentelemetry-sdk",
                 "opentelemetry/exporter/otlp/proto/common/__init__.py": "opentelemetry-exporter-otlp-proto-common"}


def _function_helper_findings(names: List[str], out: List[Finding]) -> None:
    """A top-level fgext/ (the helper for the function's code, which dependencies are merged with) must
    come with what it imports, or the function's spans go nowhere without a word."""
    if "fgext/function.py" not in names:
        return
    present = set(names)
    missing = sorted(package for marker, package in _HELPER_NEEDS.items() if marker not in present)
    if missing:
        out.append(Finding("error", "function-helper-incomplete", "fgext/function.py is here for the function's "
                           f"code, but not {', '.join(missing)}: the helper would export nothing; install with "
                           "pip install --target <dir> 'fgext[function]' (docs/function.md)", "fgext/function.py"))


def check_zip(path: Path, *, dependency_name: Optional[str] = None,
              runtime_tag: Optional[str] = None, arch: Optional[str] = None) -> List[Finding]:
    """Every problem and warning of the zip at ``path``; ConfigError when there is no such file.

    With ``runtime_tag`` (``cpython-39``) byte code, native extensions and wheels built for another
    Python (or, with ``arch``, another machine) are problems.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    out: List[Finding] = []
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        return [Finding("error", "not-a-zip", f"not a readable zip file ({error})", str(path))]
    with archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        for name, count in sorted(Counter(names).items()):
            if count > 1:
                out.append(Finding("error", "duplicate-entry", f"{count} members share this name; which one "
                                   "wins on unpack is undefined", name))
        for info in infos:
            _path_findings(info, out)
        _symlink_findings(archive, infos, out)
        if not any(name.split("/", 1)[0] == "extension" for name in names):
            nested = sorted({name.split("/extension/", 1)[0] for name in names if "/extension/" in name})
            hint = (f": it is under {nested[0]!r}/ — zip the contents of that folder, not the folder itself"
                    if nested else "")
            out.append(Finding("error", "no-extension-dir", "the zip has no top-level 'extension/' folder, "
                               "which the platform looks for" + hint))
        launchers = [info for info in infos if _LAUNCHER.match(info.filename)]
        if not launchers and any(name.startswith("extension/") for name in names):
            out.append(Finding("error", "no-launcher", "no start script in extension/: the platform runs "
                               "extension/extension*.sh (a name starting with 'extension', ending in '.sh')"))
        if len(launchers) > _MAX_EXTENSIONS:
            out.append(Finding("error", "too-many-extensions", f"{len(launchers)} start scripts; a function "
                               f"may have at most {_MAX_EXTENSIONS} extensions"))
        for info in launchers:
            _launcher_findings(archive, info, out)
        if any(name.startswith("extension/fgext-lib/") for name in names) and \
                "extension/fgext-lib/fgext/__init__.py" not in names:
            out.append(Finding("error", "fgext-missing", "extension/fgext-lib/ exists but holds no fgext "
                               "package: the launcher would fail to import the agent"))
        _function_helper_findings(names, out)
        files = [info for info in infos if not info.is_dir()]
        unpacked = sum(info.file_size for info in files)
        if len(files) > MAX_FILES:
            out.append(Finding("error", "too-many-files", f"{len(files):,} files; a dependency may hold at "
                               f"most {MAX_FILES:,}"))
        if unpacked > MAX_UNPACKED_BYTES:
            out.append(Finding("error", "too-large-unpacked", f"unpacks to {human_size(unpacked)}; a "
                               f"dependency may be at most {human_size(MAX_UNPACKED_BYTES)} unpacked"))
        _bytecode_findings(names, out, runtime_tag)
        _timestamp_pycs(archive, names, out)
        _runtime_findings(archive, names, out, runtime_tag, arch)
    size = path.stat().st_size
    if size > MAX_INLINE_BYTES:
        out.append(Finding("warning", "needs-obs", f"{human_size(size)} is above the "
                           f"{human_size(MAX_INLINE_BYTES)} inline upload limit: upload the zip to OBS and "
                           "create the dependency with depend_type obs"))
    name = dependency_name if dependency_name is not None else path.stem
    if not DEPENDENCY_NAME.match(name):
        rule = ("dependency names start with a letter, end with a letter or digit, use only letters, "
                "digits, '_', '.', '-', and have at most 96 characters")
        if dependency_name is not None:
            out.append(Finding("error", "dependency-name", f"{name!r} is not a valid dependency name: {rule}"))
        else:
            out.append(Finding("warning", "dependency-name", f"the file name {name!r} is not a valid "
                               f"dependency name; give the dependency another name when you create it "
                               f"({rule})"))
    return out
