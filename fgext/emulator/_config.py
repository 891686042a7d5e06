"""What one emulated function instance looks like: its identity, limits and the platform's behaviour.

Everything the emulator does differently from run to run is a field of :class:`EmulatorConfig`, so the
CLI, :mod:`fgext.testing` and benchmarks all describe a run the same way and the Python API never reads
flags or the environment itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

from fgext._errors import ConfigError

__all__ = ["SAMPLE_FUNCTION", "EmulatorConfig", "FunctionSpec", "parse_function_spec"]

#: the handler the emulator runs when none is given: a small function shipped in this package
SAMPLE_FUNCTION = str(Path(__file__).resolve().parent / "_sample_function.py") + ":handler"

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,59}$")


@dataclass(frozen=True)
class FunctionSpec:
    """A Python handler: the file that defines it and the callable's name in that file."""

    path: Path
    handler: str

    @property
    def module(self) -> str:
        return self.path.stem

    @property
    def runtime_handler(self) -> str:
        """The ``module.function`` form FunctionGraph shows in ``RUNTIME_HANDLER``."""
        return f"{self.module}.{self.handler}"


def parse_function_spec(value: str) -> FunctionSpec:
    """Read ``FILE.py:HANDLER``; raise :class:`ConfigError` naming what is wrong."""
    path_text, sep, handler = value.rpartition(":")
    if not sep or not path_text or not handler:
        raise ConfigError(f"--function must be FILE.py:HANDLER, got {value!r}")
    if not handler.isidentifier():
        raise ConfigError(f"--function handler {handler!r} is not a Python identifier")
    path = Path(path_text).expanduser().resolve()
    if path.suffix != ".py":
        raise ConfigError(f"--function file must be a .py file, got {path_text!r}")
    if not path.is_file():
        raise ConfigError(f"--function file {path_text!r} does not exist")
    if not path.stem.isidentifier():
        raise ConfigError(f"--function file name {path.name!r} is not importable as a module")
    return FunctionSpec(path=path, handler=handler)


@dataclass(frozen=True)
class EmulatorConfig:
    """One emulated FunctionGraph function instance and its platform.

    ``target`` is a dependency zip or a directory that holds an ``extension/`` folder. Times are in
    seconds unless the name says otherwise.
    """

    target: Union[str, Path]
    function: str = SAMPLE_FUNCTION
    function_name: str = "fgext-emulated"
    function_version: str = "latest"
    package: str = "default"
    region: str = "cn-north-4"
    project_id: str = "0123456789abcdef0123456789abcdef"
    memory_mb: int = 128
    cpu_millicores: int = 300
    timeout_s: float = 3.0
    snapshot: bool = False
    #: spell event names and fields as the spec's examples do (``platform.RuntimeDone``, ``tracelId``)
    spec_typos: bool = True
    register_timeout_s: float = 10.0
    #: how long to wait for each extension's answer to ``POST /extension/invoke``
    invoke_timeout_s: float = 2.0
    batch_max_items: int = 100
    batch_timeout_ms: int = 100
    delivery_timeout_s: float = 1.0
    #: attempts after the first failed delivery of a telemetry batch, before it is dropped
    delivery_retries: int = 3
    delivery_backoff_s: float = 0.1
    #: SIGSTOP extensions for this long between invocation waves; ``None`` never freezes
    freeze_s: Optional[float] = None
    host: str = "127.0.0.1"
    port: int = 0
    #: extra environment for extensions and the function (the sandbox defines no others)
    env: Mapping[str, str] = field(default_factory=dict)
    #: pass this process's environment to extensions too (useful for PATH-less test setups)
    inherit_env: bool = False
    python: Optional[str] = None
    #: lines of output kept per process for error messages
    keep_lines: int = 20

    def validated(self) -> EmulatorConfig:
        """Check every field a user can get wrong; return self so calls chain."""
        if not _NAME.match(self.function_name):
            raise ConfigError(
                f"function name {self.function_name!r}: start with a letter, then letters, digits, _ or -"
            )
        for label, value in (("memory", self.memory_mb), ("batch-max-items", self.batch_max_items)):
            if value < 1:
                raise ConfigError(f"--{label} must be at least 1, got {value}")
        if self.batch_timeout_ms < 0:
            raise ConfigError(f"--batch-timeout-ms must not be negative, got {self.batch_timeout_ms}")
        for label, seconds in (("timeout", self.timeout_s), ("register-timeout", self.register_timeout_s),
                               ("invoke-timeout", self.invoke_timeout_s),
                               ("delivery-timeout", self.delivery_timeout_s)):
            if not seconds > 0:
                raise ConfigError(f"--{label} must be positive, got {seconds}")
        if self.delivery_retries < 0:
            raise ConfigError(f"--delivery-retries must not be negative, got {self.delivery_retries}")
        if self.freeze_s is not None and self.freeze_s < 0:
            raise ConfigError(f"--freeze must not be negative, got {self.freeze_s}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be 0-65535, got {self.port}")
        if self.port and 8081 <= self.port <= 8090:
            raise ConfigError("--port must not be in 8081-8090: that range belongs to the extensions")
        for key in self.env:
            if not key or "=" in key:
                raise ConfigError(f"environment variable name {key!r} is invalid")
        parse_function_spec(self.function)
        if not Path(self.target).exists():
            raise ConfigError(f"target {str(self.target)!r} does not exist")
        return self

    @property
    def function_spec(self) -> FunctionSpec:
        return parse_function_spec(self.function)

    @property
    def urn(self) -> str:
        """The public URN the platform puts in invoke bodies."""
        return (f"urn:fss:{self.region}:{self.project_id}:function:{self.package}:"
                f"{self.function_name}:{self.function_version}")

    def sandbox_env(self, code_root: Path, sandbox: Path) -> Dict[str, str]:
        """The variables a FunctionGraph sandbox defines (spec section 6), pointed at local paths."""
        spec = self.function_spec
        env: Dict[str, str] = {}
        if self.inherit_env:
            env.update(os.environ)
        else:
            for key in ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT"):
                if key in os.environ:
                    env[key] = os.environ[key]
            env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.update({
            "HOME": str(sandbox / "home"),
            "TMPDIR": str(sandbox / "tmp"),
            "RUNTIME_PROJECT_ID": self.project_id,
            "RUNTIME_FUNC_NAME": self.function_name,
            "RUNTIME_FUNC_VERSION": self.function_version,
            "RUNTIME_PACKAGE": self.package,
            "RUNTIME_HANDLER": spec.runtime_handler,
            "RUNTIME_TIMEOUT": f"{self.timeout_s:g}",
            "RUNTIME_USERDATA": "{}",
            "RUNTIME_CPU": str(self.cpu_millicores),
            "RUNTIME_MEMORY": str(self.memory_mb),
            "RUNTIME_MAX_RESP_BODY_SIZE": str(6 * 1024 * 1024),
            "RUNTIME_INITIALIZER_HANDLER": "",
            "RUNTIME_INITIALIZER_TIMEOUT": "",
            "RUNTIME_ROOT": str(sandbox / "runtime"),
            "RUNTIME_CODE_ROOT": str(code_root),
            "RUNTIME_LOG_DIR": str(sandbox / "log"),
            # One sandbox's agent and function meet through this file (fgext._discovery_file), not through
            # the machine-wide default that another emulator run (or a test) may be writing.
            "FGEXT_AGENT_FILE": str(sandbox / "tmp" / "fgext-agent.json"),
        })
        env.update(self.env)
        return env
