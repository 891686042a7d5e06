"""Resolve and install the dependencies for the target runtime with pip, never for the interpreter at hand.

pip resolves; this module only makes sure pip resolved *for the target*. pip evaluates environment
markers (``async-timeout; python_version < "3.11"``) for the interpreter pip runs on, even with
``--python-version``/``--platform``. So, when an interpreter of the target version exists, its own pip
does the work; and in every case the resolved set is checked against the target's marker environment
(Python version, Linux, the architecture): a requirement the target needs but pip left out is added as a
top-level requirement and pip runs again; a distribution only the build machine needed is not installed.
The install itself is one ``pip install --no-deps`` of the exact versions that passed that check.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from fgext._errors import PackageError
from fgext.packager._runtimes import ARCHITECTURES, Runtime

__all__ = ["Installer", "Resolved", "marker_environment", "require_packaging"]

_MAX_ROUNDS = 5
_MIN_PIP = (22, 2)  # --report and --dry-run


def require_packaging() -> Any:
    try:
        import packaging.markers
        import packaging.requirements
        import packaging.utils
    except ImportError as error:  # pragma: no cover - pip's own dependency set has it everywhere we ran
        raise PackageError("fgext package needs the 'packaging' library: pip install 'fgext[package]' "
                           "(or pip install packaging)") from error
    return packaging


@dataclass(frozen=True)
class Resolved:
    """One distribution of the resolved set, as pip reported it."""

    name: str
    version: str
    wheel: str
    url: str
    direct: bool
    requires: Tuple[str, ...] = ()

    @property
    def tags(self) -> str:
        """The wheel's tags (``cp39-cp39-manylinux...``), from its file name."""
        parts = self.wheel[:-len(".whl")].split("-") if self.wheel.endswith(".whl") else []
        return "-".join(parts[-3:]) if len(parts) >= 5 else ""


def marker_environment(runtime: Runtime, arch: str, full_version: Optional[str] = None) -> Dict[str, str]:
    """PEP 508 marker values of the FunctionGraph sandbox: CPython ``runtime`` on Linux ``arch``."""
    full = full_version or f"{runtime.dotted}.0"
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": "posix",
        "platform_machine": arch,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": full,
        "python_version": runtime.dotted,
        "sys_platform": "linux",
    }


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_version(prefix: Sequence[str]) -> Optional[Tuple[int, int]]:
    try:
        done = subprocess.run([*prefix, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"pip (\d+)\.(\d+)", done.stdout)
    return (int(match.group(1)), int(match.group(2))) if done.returncode == 0 and match else None


@dataclass
class Installer:
    """Runs pip for one target: runtime, architecture, and the interpreter (if any) of that version."""

    runtime: Runtime
    arch: str
    target_python: Optional[str] = None
    use_target_pip: bool = True
    constraints: Sequence[Path] = ()
    log: Any = None  # callable(str) for progress lines, or None
    full_version: Optional[str] = None
    rounds: int = field(default=0, init=False)
    mode: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise PackageError(f"architecture {self.arch!r} is not supported; choose one of "
                               f"{', '.join(ARCHITECTURES)}")
        self._prefix = [sys.executable, "-m", "pip"]
        self.mode = "pip-cross"
        if self.target_python and self.use_target_pip:
            candidate = [self.target_python, "-m", "pip"]
            version = _pip_version(candidate)
            if version is not None and version >= _MIN_PIP:
                self._prefix = candidate
                self.mode = "target-pip"
        if self.mode == "pip-cross":
            version = _pip_version(self._prefix)
            if version is None:
                raise PackageError(f"pip is not available to {sys.executable}; install pip to build a zip")
            if version < _MIN_PIP:
                raise PackageError(f"pip {version[0]}.{version[1]} is too old; fgext needs pip >= 22.2 "
                                   "(python -m pip install -U pip)")
        packaging = require_packaging()
        self._env = marker_environment(self.runtime, self.arch, self.full_version)
        self._packaging = packaging

    @property
    def pip_command(self) -> str:
        """The pip that resolves and installs, as a command line."""
        return " ".join(self._prefix)

    # -- pip -----------------------------------------------------------------------------------------

    def _target_flags(self) -> List[str]:
        flags = ["--only-binary=:all:", "--platform", ARCHITECTURES[self.arch],
                 "--python-version", self.runtime.dotted, "--implementation", "cp",
                 "--abi", self.runtime.abi, "--disable-pip-version-check", "--no-input"]
        for path in self.constraints:
            flags += ["-c", str(path)]
        return flags

    def _run(self, args: List[str], what: str) -> None:
        command = [*self._prefix, *args]
        environ = dict(os.environ)
        environ.pop("PYTHONPATH", None)  # our own import path must not leak into the target's pip
        done = subprocess.run(command, capture_output=True, text=True, env=environ, check=False)
        if done.returncode != 0:
            raise PackageError(self._explain(done.stdout + done.stderr, what))

    def _explain(self, output: str, what: str) -> str:
        lines = [line for line in output.splitlines() if line.strip() and "is ignored" not in line]
        target = f"{self.runtime.name} ({ARCHITECTURES[self.arch]}, binary wheels only)"
        missing = re.findall(r"No matching distribution found for (\S+)", output)
        if re.search(r"NewConnectionError|Failed to establish|Name or service not known|"
                     r"Temporary failure in name resolution|ProxyError|SSLError", output):
            return (f"pip could not reach the package index while {what} for {target} (offline, a proxy, or "
                    "a certificate problem? pip's own configuration applies). pip said:\n  "
                    + "\n  ".join(lines[-8:]))
        if missing:
            return (f"pip found no wheel of {', '.join(missing)} for {target}. The package may not publish "
                    f"binary wheels for this runtime or architecture, or the version asked for does not "
                    f"support Python {self.runtime.dotted}. pip said:\n  " + "\n  ".join(lines[-12:]))
        return f"pip failed while {what} for {target}:\n  " + "\n  ".join(lines[-15:])

    def _dry_run(self, requirements: Sequence[str], scratch: Path) -> Dict[str, Resolved]:
        report = scratch / "report.json"
        self._run(["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
                   "--target", str(scratch / "unused"), *self._target_flags(), *requirements],
                  "resolving")
        data = json.loads(report.read_text(encoding="utf-8"))
        resolved: Dict[str, Resolved] = {}
        for item in data.get("install", []):
            metadata = item.get("metadata", {})
            url = item.get("download_info", {}).get("url", "")
            name = _canonical(metadata["name"])
            resolved[name] = Resolved(
                name=name, version=str(metadata["version"]),
                wheel=urllib.parse.unquote(url.rsplit("/", 1)[-1].split("#", 1)[0]), url=url,
                direct=bool(item.get("is_direct")), requires=tuple(metadata.get("requires_dist") or ()))
        return resolved

    # -- the target's view of the resolved set -------------------------------------------------------

    def _walk(self, roots: Sequence[str], resolved: Mapping[str, Resolved]) -> Tuple[Set[str], List[str]]:
        """Distributions the target needs (names), and requirements it needs that pip left out."""
        requirement = self._packaging.requirements.Requirement
        needed: Dict[str, Set[str]] = {}
        missing: List[str] = []
        queue: List[Tuple[Any, Set[str]]] = [(requirement(root), {""}) for root in roots]
        while queue:
            req, parent_extras = queue.pop(0)
            if req.marker is not None and not any(
                    req.marker.evaluate({**self._env, "extra": extra}) for extra in parent_extras):
                continue
            name = _canonical(req.name)
            found = resolved.get(name)
            if found is None or (req.url is None and not req.specifier.contains(found.version,
                                                                                prereleases=True)):
                spec = f"{req.name}[{','.join(sorted(req.extras))}]" if req.extras else req.name
                missing.append(f"{spec}{req.specifier}" if req.url is None else f"{spec} @ {req.url}")
                continue
            extras = {""} | {_canonical(extra) for extra in req.extras}
            seen = needed.get(name)
            if seen is not None and extras <= seen:
                continue
            needed[name] = (seen or set()) | extras
            queue.extend((requirement(text), needed[name]) for text in found.requires)
        return set(needed), missing

    def resolve(self, roots: Sequence[str]) -> List[Resolved]:
        """The distributions to install for ``roots`` on the target, sorted by name."""
        requirements = list(roots)
        with tempfile.TemporaryDirectory(prefix="fgext-resolve-") as scratch:
            for self.rounds in range(1, _MAX_ROUNDS + 1):
                if self.log:
                    self.log(f"resolving for {self.runtime.name} {self.arch} with "
                             f"{self._prefix[0]} -m pip (round {self.rounds})")
                resolved = self._dry_run(requirements, Path(scratch))
                needed, missing = self._walk(requirements, resolved)
                added = [text for text in missing if text not in requirements]
                if not missing:
                    return sorted((resolved[name] for name in needed), key=lambda r: r.name)
                if not added:
                    break
                requirements.extend(added)
        raise PackageError(f"pip could not produce a set of distributions that satisfies Python "
                           f"{self.runtime.dotted} on Linux {self.arch}: still missing {', '.join(missing)}")

    def install(self, distributions: Sequence[Resolved], target: Path) -> None:
        """Install exactly ``distributions`` (no further resolution) into ``target``."""
        args = ["install", "--no-deps", "--no-compile", "--ignore-installed", "--quiet",
                "--no-warn-script-location", "--target", str(target), *self._target_flags()]
        for dist in distributions:
            args.append(f"{dist.name} @ {dist.url}" if dist.direct else f"{dist.name}=={dist.version}")
        if self.log:
            self.log(f"installing {len(distributions)} distributions into the staging tree")
        self._run(args, "installing")
