"""The FunctionGraph runtimes a zip can target, and finding an interpreter of the target's version."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from fgext._errors import ConfigError

__all__ = ["ARCHITECTURES", "RUNTIMES", "Runtime", "find_interpreter", "get_runtime", "interpreter_version"]


@dataclass(frozen=True)
class Runtime:
    """One Python runtime of FunctionGraph: its name in the console and the interpreter it runs."""

    name: str
    version: Tuple[int, int]
    sandbox_python: str

    @property
    def dotted(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def nodot(self) -> str:
        return f"{self.version[0]}{self.version[1]}"

    @property
    def abi(self) -> str:
        return f"cp{self.nodot}"


def _runtime(major: int, minor: int) -> Runtime:
    return Runtime(f"Python{major}.{minor}", (major, minor),
                   f"/opt/function/runtime/python{major}.{minor}/rtsp/python/bin/python3")


RUNTIMES: Dict[str, Runtime] = {r.name: r for r in (_runtime(3, 9), _runtime(3, 10), _runtime(3, 12))}

# manylinux2014 (glibc 2.17) is what every dependency publishes and what any current sandbox image can
# load; pip also accepts the older manylinux tags below it, so one tag per architecture is enough.
ARCHITECTURES: Dict[str, str] = {
    "x86_64": "manylinux2014_x86_64",
    "aarch64": "manylinux2014_aarch64",
}

_PYTHON_CHOICES = ", ".join(RUNTIMES)


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name`` (case-insensitive), or a ConfigError that says what to do instead."""
    for runtime in RUNTIMES.values():
        if runtime.name.lower() == name.strip().lower().replace(" ", ""):
            return runtime
    lowered = name.lower()
    if re.match(r"^python ?(2|3\.[0-8])(\b|$|\.)", lowered):
        raise ConfigError(
            f"runtime {name!r} is too old for fgext, which needs Python 3.9 or newer: switch the function "
            f"to one of {_PYTHON_CHOICES} (the code of most Python 3.6 functions runs unchanged on 3.9)")
    if lowered.startswith("python"):
        raise ConfigError(f"runtime {name!r} is not a FunctionGraph runtime fgext knows; "
                          f"choose one of {_PYTHON_CHOICES}")
    raise ConfigError(
        f"runtime {name!r} has no Python interpreter the fgext launcher can use, and the platform starts "
        f"an extension inside the function's own sandbox: fgext only runs beside functions of the "
        f"{_PYTHON_CHOICES} runtimes. For a {name} function, write the extension in that runtime's "
        f"language, or move the function to a Python runtime")


def interpreter_version(python: str) -> Optional[Tuple[int, int]]:
    """The (major, minor) of the interpreter at ``python``, or None when it does not run."""
    try:
        done = subprocess.run([python, "-I", "-c", "import sys; print('%d %d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    parts = done.stdout.split()
    if done.returncode != 0 or len(parts) != 2:
        return None
    return int(parts[0]), int(parts[1])


def _candidates(runtime: Runtime) -> List[str]:
    found: List[str] = []
    on_path = shutil.which(f"python{runtime.dotted}")
    if on_path:
        found.append(on_path)
    # pyenv's shims refuse a version that is not selected, so look at its versions directly too.
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    pattern = os.path.join(pyenv_root, "versions", f"{runtime.dotted}.*", "bin", f"python{runtime.dotted}")
    found.extend(sorted(glob.glob(pattern), key=_version_key, reverse=True))
    found.extend([runtime.sandbox_python, f"/usr/bin/python{runtime.dotted}",
                  f"/usr/local/bin/python{runtime.dotted}"])
    return found


def _version_key(path: str) -> Tuple[int, ...]:
    match = re.search(r"/(\d+)\.(\d+)\.(\d+)[^/]*/bin/", path)
    return tuple(int(part) for part in match.groups()) if match else (0,)


def find_interpreter(runtime: Runtime, explicit: Optional[str] = None) -> Optional[str]:
    """An interpreter of the runtime's Python version: ``explicit`` (checked), else one found here."""
    if explicit:
        version = interpreter_version(explicit)
        if version is None:
            raise ConfigError(f"--python {explicit}: not a Python interpreter that runs on this machine")
        if version != runtime.version:
            raise ConfigError(f"--python {explicit} is Python {version[0]}.{version[1]}, but the target "
                              f"runtime {runtime.name} needs Python {runtime.dotted}")
        return explicit
    for candidate in _candidates(runtime):
        if os.access(candidate, os.X_OK) and interpreter_version(candidate) == runtime.version:
            return candidate
    return None
