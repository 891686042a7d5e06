"""The target's view of a resolved set: markers evaluated for the sandbox, extras followed, gaps named."""

from __future__ import annotations

from typing import Dict, List, Sequence, Set, Tuple

import pytest

from fgext.packager._resolve import Installer, Resolved, marker_environment
from fgext.packager._runtimes import RUNTIMES


def resolved(*items: Resolved) -> Dict[str, Resolved]:
    return {item.name: item for item in items}


def dist(name: str, version: str, *requires: str) -> Resolved:
    return Resolved(name=name, version=version, wheel=f"{name}-{version}-py3-none-any.whl",
                    url=f"https://example.invalid/{name}-{version}-py3-none-any.whl", direct=False,
                    requires=tuple(requires))


AIOHTTP = dist("aiohttp", "3.13.5", 'async-timeout<6.0,>=4.0; python_version < "3.11"', "yarl<2.0,>=1.17",
               'aiodns>=3.3.0; extra == "speedups"')
YARL = dist("yarl", "1.22.0", "idna>=2.0", 'uvloop; sys_platform == "darwin"')
IDNA = dist("idna", "3.20")
ASYNC_TIMEOUT = dist("async-timeout", "5.0.1")
AIODNS = dist("aiodns", "3.5.0")


def walk(runtime: str, roots: Sequence[str], found: Dict[str, Resolved],
         arch: str = "x86_64") -> Tuple[Set[str], List[str]]:
    installer = Installer(RUNTIMES[runtime], arch, use_target_pip=False)
    return installer._walk(roots, found)


class TestMarkerWalk:
    def test_backport_missing_for_an_older_target_is_named(self) -> None:
        """For 3.10, async-timeout (python_version < 3.11) is required; pip on 3.11 left it out."""
        needed, missing = walk("Python3.10", ["aiohttp"], resolved(AIOHTTP, YARL, IDNA))
        assert needed == {"aiohttp", "yarl", "idna"}
        assert missing == ["async-timeout<6.0,>=4.0"]

    def test_backport_not_needed_for_a_newer_target_is_left_out(self) -> None:
        """For 3.12 the backport pip resolved on an older interpreter is not needed, so not installed."""
        needed, missing = walk("Python3.12", ["aiohttp"], resolved(AIOHTTP, YARL, IDNA, ASYNC_TIMEOUT))
        assert missing == [] and "async-timeout" not in needed

    def test_sandbox_is_linux_whatever_builds(self) -> None:
        """A darwin-only requirement never counts, whichever machine runs the packager."""
        needed, missing = walk("Python3.9", ["aiohttp"], resolved(AIOHTTP, YARL, IDNA, ASYNC_TIMEOUT))
        assert missing == [] and "uvloop" not in needed

    def test_extras_are_followed(self) -> None:
        """``aiohttp[speedups]`` needs aiodns; without the extra it is not needed."""
        found = resolved(AIOHTTP, YARL, IDNA, ASYNC_TIMEOUT, AIODNS)
        with_extra, _ = walk("Python3.9", ["aiohttp[speedups]"], found)
        without, _ = walk("Python3.9", ["aiohttp"], found)
        assert "aiodns" in with_extra and "aiodns" not in without

    def test_version_outside_the_specifier_is_named(self) -> None:
        """A resolved version that the target's requirement excludes is reported for another round."""
        old = dist("async-timeout", "3.0.1")
        _, missing = walk("Python3.9", ["aiohttp"], resolved(AIOHTTP, YARL, IDNA, old))
        assert missing == ["async-timeout<6.0,>=4.0"]

    def test_unknown_architecture_is_refused(self) -> None:
        """Only the architectures FunctionGraph offers are accepted."""
        from fgext._errors import PackageError

        with pytest.raises(PackageError, match="armv7"):
            walk("Python3.9", ["aiohttp"], {}, arch="armv7")


def test_marker_environment_describes_the_sandbox() -> None:
    """The marker values are those of CPython 3.X on Linux for the chosen architecture."""
    env = marker_environment(RUNTIMES["Python3.10"], "aarch64")
    assert env["python_version"] == "3.10" and env["sys_platform"] == "linux"
    assert env["platform_machine"] == "aarch64" and env["implementation_name"] == "cpython"
