"""Runtimes: names accepted, unsupported ones explained, interpreters of the target version found."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fgext._errors import ConfigError
from fgext.packager._runtimes import RUNTIMES, find_interpreter, get_runtime, interpreter_version


@pytest.mark.parametrize("name, expected", [("Python3.9", "Python3.9"), ("python3.10", "Python3.10"),
                                            ("Python 3.12", "Python3.12")])
def test_names_are_case_and_space_insensitive(name: str, expected: str) -> None:
    """The console's spelling and close variants all name the same runtime."""
    assert get_runtime(name).name == expected


@pytest.mark.parametrize("name, words", [
    ("Python2.7", "too old"), ("Python3.6", "too old"), ("Node.js14", "sandbox"), ("PHP7.3", "sandbox"),
    ("Python3.11", "not a FunctionGraph runtime"),
])
def test_unsupported_runtimes_say_what_to_do(name: str, words: str) -> None:
    """Each refusal names the supported Python runtimes."""
    with pytest.raises(ConfigError, match=words) as caught:
        get_runtime(name)
    assert "Python3.9, Python3.10, Python3.12" in str(caught.value)


def test_runtime_tags() -> None:
    """The ABI tag and the sandbox interpreter path follow the runtime's version."""
    runtime = RUNTIMES["Python3.10"]
    assert runtime.abi == "cp310"
    assert runtime.sandbox_python == "/opt/function/runtime/python3.10/rtsp/python/bin/python3"


def test_no_interpreter_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without python3.X on PATH, in pyenv or in the usual places, no interpreter is returned."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    if any(Path(p).exists() for p in ("/usr/bin/python3.12", "/usr/local/bin/python3.12",
                                       RUNTIMES["Python3.12"].sandbox_python)):
        pytest.skip("this machine has a system python3.12")
    assert find_interpreter(RUNTIMES["Python3.12"]) is None


def test_explicit_interpreter_is_checked() -> None:
    """--python is accepted only for the runtime of its own version."""
    mine = sys.version_info[:2]
    assert interpreter_version(sys.executable) == mine
    name = f"Python{mine[0]}.{mine[1]}"
    if name in RUNTIMES:
        assert find_interpreter(RUNTIMES[name], sys.executable) == sys.executable
    other = next(r for r in RUNTIMES.values() if r.version != mine)
    with pytest.raises(ConfigError, match=f"needs Python {other.dotted}"):
        find_interpreter(other, sys.executable)
