"""The pip user's path: a wheel of fgext in a fresh virtual environment, used from outside the checkout."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from tests.conftest import ROOT
from tests.test_otlp_plugin import OtelTap, free_port, roots

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("port_range_lock")]


class Installed:
    """A venv with fgext installed from a wheel; commands run in a directory that is not the checkout."""

    def __init__(self, home: Path, wheel: Path) -> None:
        self.home = home
        self.wheel = wheel
        self.bin = home / "venv" / "bin"
        self.cwd = home / "work"
        self.cwd.mkdir()

    def env(self) -> Dict[str, str]:
        # Nothing of the checkout or of this test run leaks in: only the venv's bin first on PATH.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FGEXT_", "OTEL_", "PYTHON", "VIRTUAL_ENV"))}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), cwd=str(self.cwd), env=self.env(), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def pip(self, *args: str) -> None:
        done = self.run(str(self.bin / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *args)
        assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """fgext built as a wheel (pip wheel --no-deps .) and installed with plain pip into a fresh venv."""
    home = tmp_path_factory.mktemp("pip-user")
    wheels = home / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check",
                            str(ROOT), "-w", str(wheels)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    venv.EnvBuilder(with_pip=True).create(home / "venv")
    user = Installed(home, next(wheels.glob("fgext-*.whl")))
    user.pip(str(user.wheel))
    yield user


def test_wheel_holds_no_checkout(installed: Installed) -> None:
    """The installed fgext is the venv's copy, not the checkout (so the rest proves the wheel alone works)."""
    done = installed.run(str(installed.bin / "python"), "-c", "import fgext; print(fgext.__file__)")
    assert done.returncode == 0 and str(installed.home / "venv") in done.stdout and str(ROOT) not in done.stdout


def test_demo_runs_from_the_installed_wheel(installed: Installed) -> None:
    """`fgext emulate --demo` with no checkout: the agent registers, runs four invocations, traces print."""
    done = installed.run("fgext", "emulate", "--demo")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "traces (4):" in done.stdout and "source checkout" not in done.stdout + done.stderr


def test_package_without_its_extra_says_how_to_install_it(installed: Installed) -> None:
    """Without fgext[package] (no 'packaging' library), `fgext package` exits 2 with the pip command."""
    has_packaging = installed.run(str(installed.bin / "python"), "-c", "import packaging")
    if has_packaging.returncode == 0:
        pytest.skip("a dependency of fgext brought 'packaging' along: the extra cannot be missing here")
    done = installed.run("fgext", "package", "-o", "x.zip")
    assert done.returncode == 2, done.stderr
    assert f"{installed.bin / 'python'} -m pip install 'fgext[package]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_package_then_emulate_the_zip(installed: Installed, tap_factory: Callable[[int], OtelTap]) -> None:
    """With the documented extra, `fgext package -o dist/x.zip` builds a zip that `fgext emulate -n 2` runs,
    exporting both invocations' traces to a collector (oteltap)."""
    installed.pip(f"fgext[package] @ {installed.wheel.as_uri()}")
    built = installed.run("fgext", "package", "-q", "-o", "dist/x.zip")
    assert built.returncode == 0, built.stderr[-3000:]
    with zipfile.ZipFile(installed.cwd / "dist" / "x.zip") as archive:
        names = archive.namelist()
    assert "extension/fgext-lib/fgext/_bootstrap.py" in names
    assert not any(name.startswith("extension/fgext-lib/fgext/emulator/") for name in names)
    tap = tap_factory(free_port())
    tap.start()
    ran = installed.run("fgext", "emulate", "dist/x.zip", "-n", "2",
                        "--env", f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{tap.port}")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert ran.stdout.rstrip().endswith("no problems")

    def two_roots(spans: List[Dict[str, Any]]) -> bool:
        return len(roots(spans)) >= 2

    asyncio.run(tap.wait("spans", two_roots, timeout=30))


def test_sdist_carries_docs_examples_and_licence(tmp_path: Path) -> None:
    """The sdist holds LICENSE, CHANGELOG.md, docs/, examples/, the launcher and packaging/; the wheel built
    from it declares the project's URLs and ships the licence."""
    source = tmp_path / "src"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=str(ROOT), capture_output=True,
                            text=True, check=True).stdout.split()
    for name in listed:  # a copy: building writes *.egg-info into the tree it builds
        path, copy = ROOT / name, source / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():  # fgext/packager/_data links to the launcher and packaging/
            copy.symlink_to(os.readlink(path))
        elif path.is_file():
            shutil.copy2(path, copy)
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    with tarfile.open(next((tmp_path / "dist").glob("fgext-*.tar.gz"))) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for required in ("LICENSE", "CHANGELOG.md", "README.md", "docs/platform.md", "docs/plugins.md",
                     "examples/README.md", "examples/sqlite_sink.py", "extension/extensionFgext.sh",
                     "packaging/constraints/Python3.9.txt"):
        assert required in names, required
    with zipfile.ZipFile(next((tmp_path / "dist").glob("fgext-*.whl"))) as wheel:
        metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        text = wheel.read(metadata).decode()
        assert any(n.endswith("LICENSE") for n in wheel.namelist())
    assert "Project-URL: Changelog, https://" in text and "Project-URL: Homepage, https://" in text
