"""``fgext package``: stage the agent, its dependencies, plugins and config, then write the zip.

Layout of the zip (the launcher ``extension/extensionFgext.sh`` expects exactly this)::

    extension/extensionFgext.sh   the launcher, mode 0755 (name from --name, must match extension*.sh)
    extension/fgext-lib/          fgext and its libraries, with byte code; put on PYTHONPATH
    extension/fgext-plugins/      the user's plugin modules and packages; put on PYTHONPATH after the lib
    extension/fgext.json          the optional config file (FGEXT_CONFIG)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from fgext._errors import ConfigError, PackageError
from fgext.packager import _assets
from fgext.packager._compile import compile_tree
from fgext.packager._inspect import bundled_names, compile_problems, plugin_findings
from fgext.packager._limits import MAX_FILES, MAX_INLINE_BYTES, MAX_UNPACKED_BYTES, human_size
from fgext.packager._resolve import Installer, Resolved, marker_environment, require_packaging
from fgext.packager._runtimes import ARCHITECTURES, Runtime, find_interpreter, get_runtime
from fgext.packager._tree import PruneStats, owners, prune, strip_debug, trim_dist_info
from fgext.packager._zip import Entry, write_zip

__all__ = ["BuildOptions", "BuildResult", "Contributor", "build"]

LAUNCHER_NAME = re.compile(r"^extension[A-Za-z0-9_.\-]*\.sh$")
# What the agent imports in the sandbox (fgext/_*.py, fgext/otlp, fgext/plugins): fgext encodes and sends
# OTLP itself, so it needs opentelemetry-proto's messages and nothing of the SDK (the OTEL_* variable names
# are fgext.otlp._env's) - never the SDK, the API or the OTLP exporters fgext's own dependency list carries
# for its users' function-side helper (with requests, urllib3 and googleapis-common-protos). gRPC export
# calls grpcio directly.
# async-timeout, which fgext._hooks imports below Python 3.11, comes with aiohttp's own dependency there.
AGENT_RUNTIME = ("aiohttp", "structlog", "opentelemetry-proto")
AGENT_GRPC = ("grpcio",)
# Parts of fgext the sandbox never imports (the developer tools and the test helpers); shipping them would
# only add files to every zip.
_BUILD_ONLY = ["fgext/packager", "fgext/emulator", "fgext/publish", "fgext/testing.py", "fgext/_plugintest.py"]
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*~", ".*")


@dataclass
class BuildOptions:
    """Everything ``fgext package`` takes; the CLI flags map one to one."""

    output: Path
    runtime: str = "Python3.9"
    arch: str = "x86_64"
    name: str = "extensionFgext.sh"
    python: Optional[str] = None
    plugins: Sequence[Path] = ()
    requirements: Sequence[str] = ()
    config: Optional[Path] = None
    with_grpc: bool = False
    constraints: Sequence[Path] = ()
    compile: bool = True
    #: remove debug sections from shared libraries (binutils strip), when strip is available
    strip: bool = True
    #: resolve with the target interpreter's own pip when it has one (else the running pip, cross-target)
    use_target_pip: bool = True
    log: Optional[Callable[[str], None]] = None


@dataclass(frozen=True)
class Contributor:
    """One owner of files in the zip (a distribution, a plugin, the launcher) and what it weighs."""

    name: str
    files: int
    unpacked: int
    compressed: int


@dataclass
class BuildResult:
    """What was built: sizes, contents, byte code, and warnings a person should read."""

    output: str
    runtime: str
    arch: str
    launcher: str
    compressed: int
    unpacked: int
    files: int
    sha256: str
    distributions: List[Dict[str, str]]
    contributors: List[Contributor]
    plugins: List[str]
    config: Optional[str]
    bytecode: Dict[str, Any]
    resolver: Dict[str, Any]
    removed: Dict[str, Any]
    warnings: List[str] = field(default_factory=list)

    @property
    def needs_obs(self) -> bool:
        return self.compressed > MAX_INLINE_BYTES

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["needs_obs"] = self.needs_obs
        data["limits"] = {"inline_bytes": MAX_INLINE_BYTES, "unpacked_bytes": MAX_UNPACKED_BYTES,
                          "files": MAX_FILES}
        return data


# -- inputs -----------------------------------------------------------------------------------------------

def _check_name(name: str) -> None:
    if not LAUNCHER_NAME.match(name):
        raise ConfigError(f"--name {name!r}: the platform only starts scripts named extension*.sh "
                          "(letters, digits, '_', '.', '-'), e.g. extensionFgext.sh")


def _plugin_name(path: Path) -> str:
    if not path.exists():
        raise ConfigError(f"--plugin {path}: no such file or directory")
    if path.is_dir():
        if not (path / "__init__.py").is_file():
            raise ConfigError(f"--plugin {path}: a plugin folder must be a Python package (with __init__.py)")
        name = path.name
    elif path.suffix == ".py":
        name = path.stem
    else:
        raise ConfigError(f"--plugin {path}: give a Python module (.py) or a package folder")
    if not name.isidentifier():
        raise ConfigError(f"--plugin {path}: {name!r} is not an importable module name")
    return name


def _read_config(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"--config {path}: cannot read it ({error.strerror})") from error
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"--config {path}: not valid JSON ({error})") from error
    if not isinstance(parsed, dict):
        raise ConfigError(f"--config {path}: the config file must hold a JSON object")
    return data


def _requirements(values: Sequence[str]) -> List[str]:
    from packaging.requirements import InvalidRequirement, Requirement

    result: List[str] = []
    for value in values:
        path = Path(value)
        if value.endswith(".whl") and path.is_file():
            result.append(f"{path.name.split('-', 1)[0]} @ {path.resolve().as_uri()}")
            continue
        lines = [value]
        if path.is_file():
            lines = [line.split(" #", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
            lines = [line for line in lines if line and not line.startswith("#")]
            options = [line for line in lines if line.startswith("-")]
            if options:
                raise ConfigError(f"--requirement {value}: pip options such as {options[0]!r} are not "
                                  "supported here; list one requirement per line")
        for line in lines:
            try:
                Requirement(line)
            except InvalidRequirement as error:
                raise ConfigError(f"--requirement {line!r}: not a valid requirement ({error})") from error
            result.append(line)
    return result


def _check_plugins(plugins: Sequence[Path], names: Sequence[str], runtime: Runtime, python: Optional[str],
                   warnings: List[str]) -> None:
    """Refuse plugins named like a standard-library module, or whose sources do not compile for the target.

    Done before anything is downloaded. With no interpreter of the target's version, this one's
    compile() checks the sources (the report says so).
    """
    problems: List[str] = []
    for path, name in zip(plugins, names):
        for _severity, _code, message, _where in plugin_findings([f"{name}.py"], frozenset()):
            problems.append(f"--plugin {path}: {message}")
    sources: List[Tuple[Path, str]] = []
    for path in map(Path, plugins):
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        sources += [(file, str(file)) for file in files if "__pycache__" not in file.parts]
    failed, how = compile_problems(sources, runtime.version, python)
    problems += [f"--plugin {shown}: does not compile for Python {runtime.dotted}: {reason} ({how})"
                 for shown, reason in failed]
    if problems:
        raise PackageError("\n".join(problems))
    if sources and python is None:
        warnings.append(f"plugins {how}: no Python {runtime.dotted} interpreter was found to compile them")


# -- fgext itself -----------------------------------------------------------------------------------------

def _fgext_wheel(scratch: Path, log: Optional[Callable[[str], None]]) -> Optional[Path]:
    """Build a wheel of the fgext checkout we run from (None when fgext is installed, not checked out)."""
    root = _assets.source_tree()
    if root is None:
        return None
    # Build from a copy: setuptools writes build/ and *.egg-info/ into the tree it builds.
    source = scratch / "fgext-src"
    source.mkdir()
    for path in sorted(root.iterdir()):
        if path.name in ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in") or \
                re.match(r"^(README|LICEN[CS]E|NOTICE)", path.name):
            shutil.copy2(path, source / path.name)
    shutil.copytree(root / "fgext", source / "fgext", ignore=_IGNORED)
    if log:
        log(f"building a wheel of fgext from {root}")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                           "--disable-pip-version-check", "-w", str(scratch / "wheel"), str(source)],
                          capture_output=True, text=True, check=False)
    wheels = sorted((scratch / "wheel").glob("fgext-*.whl"))
    if done.returncode != 0 or not wheels:
        raise PackageError(f"could not build a wheel of fgext from {root}:\n{done.stderr.strip()[-2000:]}")
    return wheels[0]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _agent_roots(requires: Sequence[str], runtime: Runtime, arch: str, with_grpc: bool) -> List[str]:
    """The agent's runtime requirements for the target: fgext's own specifiers for AGENT_RUNTIME's names."""
    from packaging.requirements import Requirement

    wanted = [*AGENT_RUNTIME, *(AGENT_GRPC if with_grpc else ())]
    environment = {**marker_environment(runtime, arch), "extra": ""}
    roots: Dict[str, str] = {}
    not_for_target: Set[str] = set()
    for text in requires:
        requirement = Requirement(text)
        name = _canonical(requirement.name)
        if name not in wanted:
            continue
        if requirement.marker is None or requirement.marker.evaluate(environment):
            requirement.marker = None
            roots[name] = str(requirement)
        else:
            not_for_target.add(name)  # async-timeout: only before Python 3.11
    # A name fgext does not list itself (grpcio comes with the gRPC exporter): the newest the target takes.
    return [roots.get(name, name) for name in wanted if name in roots or name not in not_for_target]


def _agent_sources(lib: Path, installed: Dict[str, str], runtime: Runtime, arch: str,
                   with_grpc: bool) -> Set[str]:
    """The ``.py`` files (relative to ``lib``) of fgext and of the distributions the agent's runtime pulls in:
    AGENT_RUNTIME's and their requirements for the target, read from the installed ``METADATA``. A
    ``--requirement`` distribution is not among them unless the agent needs it too."""
    import email.parser

    from packaging.requirements import InvalidRequirement, Requirement

    environment = {**marker_environment(runtime, arch), "extra": ""}
    requires: Dict[str, List[str]] = {}
    for metadata in lib.glob("*.dist-info/METADATA"):
        with metadata.open("rb") as handle:
            headers = email.parser.BytesHeaderParser().parse(handle)
        requires[_canonical(metadata.parent.name.partition("-")[0])] = headers.get_all("Requires-Dist") or []
    agent = {"fgext"}  # fgext's own requirements are its developers' (the SDK...): not followed
    pending = [_canonical(name) for name in (*AGENT_RUNTIME, *(AGENT_GRPC if with_grpc else ()))]
    while pending:
        name = pending.pop()
        if name in agent or name not in requires:
            continue
        agent.add(name)
        for text in requires[name]:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if requirement.marker is None or requirement.marker.evaluate(environment):
                pending.append(_canonical(requirement.name))
    return {path for path, owner in installed.items()
            if path.endswith(".py") and _canonical(owner.partition(" ")[0]) in agent}


def _wheel_requires(wheel: Path) -> List[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    import email.parser
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if re.match(r"^[^/]+\.dist-info/METADATA$", n))
        message = email.parser.Parser().parsestr(archive.read(metadata).decode("utf-8"))
    return message.get_all("Requires-Dist") or []


def _stand_in_wheel(version: str, folder: Path) -> Path:
    """A wheel of fgext with metadata only and no dependencies, for pip's resolution alone.

    A plugin distribution given with ``-r`` depends on fgext; pip must find that requirement satisfied
    without pulling fgext's own dependency list (the OTLP exporters the sandbox never imports) into the
    zip. fgext itself is installed from the real wheel or copied from the installation, never from this.
    """
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"fgext-{version}-py3-none-any.whl"
    info = f"fgext-{version}.dist-info"
    files = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: fgext\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: fgext\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def _installed_fgext() -> Any:
    """The installed fgext distribution."""
    try:
        return importlib.metadata.distribution("fgext")
    except importlib.metadata.PackageNotFoundError as error:
        raise PackageError("fgext is neither a checkout nor an installed distribution here") from error


def _copy_installed(dist: Any, lib: Path) -> None:
    for file in dist.files or []:
        relative = str(file)
        if not (relative.startswith("fgext/") or re.match(r"^fgext-[^/]*\.dist-info/", relative)):
            continue
        if "__pycache__" in relative:
            continue
        target = lib / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(dist.locate_file(file)), target)


# -- the zip ----------------------------------------------------------------------------------------------

def _entries(stage: Path, launcher: str) -> List[Entry]:
    entries: List[Entry] = []
    for folder, dirs, files in os.walk(stage):
        dirs.sort()
        here = Path(folder)
        if here != stage:
            entries.append(Entry(here.relative_to(stage).as_posix(), None, 0o755))
        for name in sorted(files):
            path = here / name
            relative = path.relative_to(stage).as_posix()
            executable = relative == f"extension/{launcher}" or os.stat(path).st_mode & 0o111
            entries.append(Entry(relative, path, 0o755 if executable else 0o644))
    return entries


def _owner_of(relative: str, installed: Dict[str, str]) -> str:
    if relative.startswith("extension/fgext-plugins/"):
        return "plugins: " + relative.split("/")[2].split(".")[0]
    if not relative.startswith("extension/fgext-lib/"):
        return "launcher and config"
    inner = relative[len("extension/fgext-lib/"):]
    match = re.match(r"^(.*)__pycache__/([^/.]+)\.[^/]*\.pyc$", inner)
    if match:
        inner = f"{match.group(1)}{match.group(2)}.py"
    if inner in installed:
        return installed[inner]
    dist_info = re.match(r"^([^/]+)\.dist-info/", inner)
    if dist_info:
        name, _, version = dist_info.group(1).partition("-")
        return f"{name} {version}"
    return "other"


def _strip_tool(arch: str) -> Tuple[Optional[str], str]:
    """binutils strip for ``arch``: the host's own, or a cross one (``aarch64-linux-gnu-strip``)."""
    if platform.machine() == arch and sys.platform.startswith("linux"):
        return shutil.which("strip"), "strip"
    cross = f"{arch}-linux-gnu-strip"
    return shutil.which(cross), cross


def build(options: BuildOptions) -> BuildResult:
    """Build the zip described by ``options``; raise ConfigError/PackageError with a clear message."""
    require_packaging()
    runtime = get_runtime(options.runtime)
    if options.arch not in ARCHITECTURES:
        raise ConfigError(f"--arch {options.arch!r}: choose one of {', '.join(ARCHITECTURES)}")
    _check_name(options.name)
    output = Path(options.output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)  # `-o dist/x.zip` in a fresh checkout
    except OSError as error:
        raise ConfigError(f"-o {output}: cannot create the folder {output.parent}: {error.strerror}") from None
    plugin_names = [_plugin_name(Path(path)) for path in options.plugins]
    duplicates = sorted({name for name in plugin_names if plugin_names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"--plugin: two plugins are called {duplicates[0]!r}")
    config = _read_config(Path(options.config)) if options.config else None
    extra_requirements = _requirements(options.requirements)
    for path in options.constraints:
        if not Path(path).is_file():
            raise ConfigError(f"--constraint {path}: no such file")
    log = options.log
    warnings: List[str] = []

    # Looked for even with --no-compile: its pip resolves markers for the target in one round.
    python = find_interpreter(runtime, options.python)
    if python is None and options.compile:
        warnings.append(
            f"no Python {runtime.dotted} interpreter found (give one with --python PATH, or install "
            f"python{runtime.dotted}, e.g. `pyenv install {runtime.dotted}`): the zip holds sources only, "
            "and the read-only sandbox recompiles every module in memory at each cold start")
    _check_plugins(options.plugins, plugin_names, runtime, python, warnings)
    constraints = [path for path in [_assets.constraints_file(runtime.name)] if path is not None]
    constraints += [Path(path) for path in options.constraints]

    with tempfile.TemporaryDirectory(prefix="fgext-package-") as scratch_name:
        scratch = Path(scratch_name)
        stage = scratch / "stage"
        extension = stage / "extension"
        lib = extension / "fgext-lib"
        lib.mkdir(parents=True)

        wheel = _fgext_wheel(scratch, log)
        installed_dist = None
        if wheel is not None:
            requires, version = _wheel_requires(wheel), wheel.name.split("-")[1]
        else:
            installed_dist = _installed_fgext()
            requires, version = installed_dist.requires or [], str(installed_dist.version)
        # fgext goes in without its dependencies (its own list is the developer's); the agent's come next.
        stand_in = _stand_in_wheel(version, scratch / "stand-in")
        roots = _agent_roots(requires, runtime, options.arch, options.with_grpc) + extra_requirements
        roots.append(f"fgext @ {stand_in.as_uri()}")

        installer = Installer(runtime, options.arch, target_python=python,
                              use_target_pip=options.use_target_pip, constraints=constraints, log=log)
        distributions: List[Resolved] = [d for d in installer.resolve(roots) if d.name != "fgext"]
        if wheel is not None:
            fgext_dist = Resolved(name="fgext", version=version, wheel=wheel.name,
                                  url=wheel.as_uri(), direct=True)
            distributions = sorted([*distributions, fgext_dist], key=lambda d: d.name)
        installer.install(distributions, lib)
        if installed_dist is not None:
            if log:
                log(f"copying fgext {version} from this installation")
            _copy_installed(installed_dist, lib)
        for name in AGENT_GRPC if options.with_grpc else ():
            if not any(d.name == name for d in distributions):
                raise PackageError(f"--with-grpc: {name} was not resolved for {runtime.name}")

        installed = owners(lib)
        stats = PruneStats()
        prune(lib, stats, drop=_BUILD_ONLY)
        trim_dist_info(lib, stats)
        stripping: Dict[str, Any] = {"files": 0, "saved": 0, "tool": None}
        if options.strip:
            tool, wanted = _strip_tool(options.arch)
            if tool is None:
                warnings.append(f"binutils `{wanted}` not found: shared libraries keep their debug info "
                                "(several MB; install it, or pass --no-strip to silence this)")
            else:
                count, saved, failures = strip_debug(lib, tool)
                stripping = {"files": count, "saved": saved, "tool": tool}
                if failures:
                    warnings.append(f"strip failed on {len(failures)} shared librar(ies), shipped as they "
                                    f"are: {'; '.join(failures[:3])}")

        plugins_dir = extension / "fgext-plugins"
        # A package folder counts by its name, a module by its file's (``six.py``, ``_cffi.cpython-39-...so``).
        bundled = bundled_names(f"{entry.name}/" if entry.is_dir() else entry.name for entry in lib.iterdir())
        for path, name in zip(options.plugins, plugin_names):
            plugins_dir.mkdir(exist_ok=True)
            if name in bundled:
                raise PackageError(f"--plugin {path}: {name!r} is also the name of a module in fgext-lib, "
                                   "which comes first on the import path and would hide the plugin; rename it")
            source = Path(path)
            if source.is_dir():
                shutil.copytree(source, plugins_dir / name, ignore=_IGNORED)
            else:
                shutil.copyfile(source, plugins_dir / source.name)
        if config is not None:
            (extension / "fgext.json").write_bytes(config)
        shutil.copyfile(_assets.launcher(), extension / options.name)

        bytecode: Dict[str, Any] = {"compiled": 0, "python": None, "invalidation": None, "failed": []}
        if python is not None and options.compile:
            if log:
                log(f"compiling byte code with {python}")
            roots_to_compile = [(lib, "extension/fgext-lib", True)]
            if plugins_dir.is_dir():
                roots_to_compile.append((plugins_dir, "extension/fgext-plugins", False))
            compiled = compile_tree(python, roots_to_compile,
                                    bare=_agent_sources(lib, installed, runtime, options.arch, options.with_grpc))
            bytecode = {"compiled": compiled["compiled"], "python": python, "tag": compiled["tag"],
                        "invalidation": "unchecked-hash", "failed": compiled["failed"]}
            failed: List[str] = compiled["failed"]  # type: ignore[assignment]
            if failed:
                warnings.append(f"{len(failed)} module(s) do not compile on Python {runtime.dotted} and "
                                f"ship without byte code: {'; '.join(failed[:5])}")

        entries = _entries(stage, options.name)
        files = [entry for entry in entries if not entry.is_dir]
        unpacked = sum(entry.source.stat().st_size for entry in files if entry.source is not None)
        if len(files) > MAX_FILES:
            raise PackageError(f"the zip would hold {len(files):,} files, more than the platform's "
                               f"{MAX_FILES:,} per dependency: drop --requirement distributions or plugins")
        if unpacked > MAX_UNPACKED_BYTES:
            raise PackageError(f"the zip would unpack to {human_size(unpacked)}, more than the platform's "
                               f"{human_size(MAX_UNPACKED_BYTES)} per dependency")
        partial = output.with_name(f".{output.name}.partial")
        try:
            written = write_zip(partial, entries)
            os.replace(partial, output)
        finally:
            if partial.exists():
                partial.unlink()

        sizes: Dict[str, List[int]] = {}
        for entry, info in written:
            if entry.is_dir:
                continue
            bucket = sizes.setdefault(_owner_of(entry.name, installed), [0, 0, 0])
            bucket[0] += 1
            bucket[1] += info.file_size
            bucket[2] += info.compress_size
        contributors = sorted((Contributor(name, *values) for name, values in sizes.items()),
                              key=lambda c: (-c.unpacked, c.name))

    compressed = output.stat().st_size
    listed = [{"name": d.name, "version": d.version, "wheel": d.wheel, "tags": d.tags} for d in distributions]
    if installed_dist is not None:
        listed.append({"name": "fgext", "version": str(installed_dist.version), "wheel": "(installed copy)",
                       "tags": "py3-none-any"})
        listed.sort(key=lambda item: item["name"])
    if compressed > MAX_INLINE_BYTES:
        warnings.append(f"the zip is {human_size(compressed)}, above the {human_size(MAX_INLINE_BYTES)} "
                        "inline upload limit: upload it to OBS and create the dependency with "
                        "depend_type obs (depend_link = its OBS URL)")
    return BuildResult(
        output=str(output), runtime=runtime.name, arch=options.arch, launcher=f"extension/{options.name}",
        compressed=compressed, unpacked=unpacked, files=len(files),
        sha256=hashlib.sha256(output.read_bytes()).hexdigest(),
        distributions=listed,
        contributors=contributors, plugins=sorted(plugin_names),
        config="extension/fgext.json" if config is not None else None, bytecode=bytecode,
        resolver={"mode": installer.mode, "rounds": installer.rounds, "pip": installer.pip_command,
                  "constraints": [str(path) for path in constraints]},
        removed={"files": stats.files, "bytes": stats.size, "by_reason": dict(sorted(stats.reasons.items())),
                 "debug_info_stripped": stripping},
        warnings=warnings)
