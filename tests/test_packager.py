"""``fgext package`` end to end: real pip against the package index, real target interpreters, real zips.

Each runtime is built once per session (module-scoped fixtures) and every test inspects that zip. pip's
cache lives under /tmp so reruns are fast; the first run downloads about 5 MB per runtime.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
from packaging.version import Version

from fgext.packager import BuildOptions, BuildResult, build
from fgext.packager._runtimes import RUNTIMES, find_interpreter
from tests.agentproc import AgentProcess
from tests.conftest import LAUNCHER, ROOT
from tests.platform import RecordingPlatform, free_port
from tests.test_otlp_plugin import OtelTap

pytestmark = [pytest.mark.slow]

PIP_CACHE = os.environ.get("FGEXT_TEST_PIP_CACHE", "/tmp/fgext-test-pip-cache")
PY39 = find_interpreter(RUNTIMES["Python3.9"])
PY310 = find_interpreter(RUNTIMES["Python3.10"])
needs_py39 = pytest.mark.skipif(PY39 is None, reason="no Python 3.9 interpreter on this machine")
needs_py310 = pytest.mark.skipif(PY310 is None, reason="no Python 3.10 interpreter on this machine")

PLUGIN_MODULE = '''\
"""A user plugin shipped in extension/fgext-plugins: records that the agent started it."""
from typing import ClassVar, Dict
import sys
from fgext import Plugin


class MarkerPlugin(Plugin):
    name: ClassVar[str] = "marker"
    config_schema: ClassVar[Dict[str, type]] = {"path": str}

    def start(self, context):
        with open(context.config["path"], "w") as handle:
            handle.write("started on %d.%d" % sys.version_info[:2])
'''


@dataclass
class Built:
    """A zip built by the test session, with the report the command printed."""

    path: Path
    report: Dict[str, Any]
    inputs: Path

    def zip(self) -> zipfile.ZipFile:
        return zipfile.ZipFile(self.path)

    def names(self) -> List[str]:
        with self.zip() as archive:
            return archive.namelist()

    def versions(self) -> Dict[str, str]:
        return {d["name"]: d["version"] for d in self.report["distributions"]}


@pytest.fixture(scope="module")
def pip_cache() -> Iterator[None]:
    old = os.environ.get("PIP_CACHE_DIR")
    os.environ["PIP_CACHE_DIR"] = PIP_CACHE
    yield
    if old is None:
        os.environ.pop("PIP_CACHE_DIR", None)
    else:
        os.environ["PIP_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plugin module, a plugin package and a config file, at fixed content."""
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "marker_plugin.py").write_text(PLUGIN_MODULE)
    package = folder / "acme_plugins"
    package.mkdir()
    (package / "__init__.py").write_text('"""A plugin package."""\nVALUE = 42\n')
    (package / "helpers.py").write_text("def double(x: int) -> int:\n    return 2 * x\n")
    (package / "notes.txt~").write_text("an editor backup that must not ship\n")
    marker = folder / "marker.txt"
    (folder / "fgext.json").write_text(json.dumps({"plugins": {"marker": {"path": str(marker)}}}))
    return folder


def run_cli(*args: str, cwd: Optional[Path] = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fgext", *args], capture_output=True, text=True,
                          cwd=str(cwd or ROOT), env=env, timeout=600, check=False)


def cli_build(out: Path, inputs: Path, runtime: str) -> Built:
    done = run_cli("package", "-o", str(out), "--runtime", runtime, "--json", "--quiet",
                   "--plugin", str(inputs / "marker_plugin.py"), "--plugin", str(inputs / "acme_plugins"),
                   "--config", str(inputs / "fgext.json"), "--requirement", "six>=1.16")
    assert done.returncode == 0, done.stderr
    return Built(out, json.loads(done.stdout), inputs)


@pytest.fixture(scope="module")
def zip39(pip_cache: None, inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Python3.9, through the command line, resolved by the 3.9 interpreter's own pip."""
    if PY39 is None:
        pytest.skip("no Python 3.9 interpreter on this machine")
    return cli_build(tmp_path_factory.mktemp("b39") / "fgext-py39.zip", inputs, "Python3.9")


@pytest.fixture(scope="module")
def zip310(pip_cache: None, inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Python3.10 through the API and the *running* pip (3.11) cross-target: the marker check must add
    what pip's own marker evaluation leaves out."""
    if PY310 is None:
        pytest.skip("no Python 3.10 interpreter on this machine")
    out = tmp_path_factory.mktemp("b310") / "fgext-py310.zip"
    result: BuildResult = build(BuildOptions(
        output=out, runtime="Python3.10", use_target_pip=False,
        plugins=[inputs / "marker_plugin.py", inputs / "acme_plugins"], config=inputs / "fgext.json"))
    return Built(out, json.loads(json.dumps(result.to_dict(), default=lambda o: o.__dict__)), inputs)


def unpack(built: Built, into: Path) -> Path:
    """Unpack with Info-ZIP's unzip, as a Linux platform would, so stored mode bits are applied."""
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["unzip", "-q", str(built.path), "-d", str(into)], check=True, timeout=120)
    return into / "extension"


def run_in_zip(extension: Path, code: str) -> str:
    """Run ``code`` on 3.9 as the sandbox would, with an unpacked zip's fgext-lib and fgext-plugins (of its
    ``extension`` folder) first on ``sys.path`` and no site-packages; its output, stripped."""
    assert PY39 is not None
    code = "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n" + code
    done = subprocess.run([PY39, "-S", "-E", "-B", "-c", code, str(extension / "fgext-lib"),
                           str(extension / "fgext-plugins")], capture_output=True, text=True, timeout=60,
                          check=False, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def magic_number(python: str) -> bytes:
    done = subprocess.run([python, "-I", "-c", "import importlib.util,sys;"
                           "sys.stdout.write(importlib.util.MAGIC_NUMBER.hex())"],
                          capture_output=True, text=True, check=True, timeout=30)
    return bytes.fromhex(done.stdout)


class TestAgentRoots:
    REQUIRES = ["aiohttp>=3.9", "structlog>=23.1", "opentelemetry-proto>=1.25", "opentelemetry-sdk>=1.25",
                "async-timeout>=4.0; python_version < '3.11'"]

    @pytest.mark.parametrize("runtime, wanted", [("Python3.9", True), ("Python3.10", True), ("Python3.12", False)])
    def test_a_requirement_marked_for_older_pythons_only_follows_its_marker(
            self, runtime: str, wanted: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        """A runtime root whose requirement carries a marker (async-timeout, were it one) is a root for 3.9 and
        3.10 and left out of a 3.12 zip, instead of being taken unpinned for every target."""
        from fgext.packager import _build

        monkeypatch.setattr(_build, "AGENT_RUNTIME", (*_build.AGENT_RUNTIME, "async-timeout"))
        roots = _build._agent_roots(self.REQUIRES, RUNTIMES[runtime], "x86_64", with_grpc=False)
        assert ("async-timeout>=4.0" in roots) is wanted
        assert not [r for r in roots if r.startswith("async-timeout") and r != "async-timeout>=4.0"]
        assert {"aiohttp>=3.9", "structlog>=23.1", "opentelemetry-proto>=1.25"} <= set(roots)


class TestTargetResolution:
    def test_wheel_tags_match_python39_x86_64(self, zip39: Built) -> None:
        """Every wheel is pure Python or built for CPython 3.9 (or abi3) on manylinux x86_64."""
        for dist in zip39.report["distributions"]:
            python, abi, platform = dist["tags"].split("-")
            assert python in ("py3", "py2.py3", "cp39") or python.startswith("cp3"), dist
            assert abi in ("none", "abi3", "cp39"), dist
            assert platform == "any" or all(p.startswith("manylinux") and p.endswith("_x86_64")
                                            for p in platform.split(".")), dist
        sos = [n for n in zip39.names() if n.endswith(".so")]
        assert sos and all("cpython-39-x86_64-linux-gnu" in n or ".abi3." in n for n in sos)

    def test_wheel_tags_match_python310(self, zip310: Built) -> None:
        """The 3.10 zip carries cp310 extension modules, never the building interpreter's cp311."""
        sos = [n for n in zip310.names() if n.endswith(".so")]
        assert sos and all("cpython-310-x86_64-linux-gnu" in n or ".abi3." in n for n in sos)
        assert not any("cpython-311" in n for n in zip310.names())

    def test_async_timeout_present_for_39_and_310(self, zip39: Built, zip310: Built) -> None:
        """aiohttp's ``async-timeout; python_version < '3.11'`` is honoured for both older targets."""
        assert "async-timeout" in zip39.versions()
        assert "async-timeout" in zip310.versions()
        assert any(n.startswith("extension/fgext-lib/async_timeout/") for n in zip310.names())

    def test_cross_target_pip_needed_the_marker_round(self, zip310: Built) -> None:
        """Resolving 3.10 with the running pip takes a second round exactly when the running Python (3.11+)
        drops the ``python_version < '3.11'`` requirements the target needs."""
        assert zip310.report["resolver"]["mode"] == "pip-cross"
        assert (zip310.report["resolver"]["rounds"] >= 2) is (sys.version_info >= (3, 11))

    def test_python39_gets_the_opentelemetry_line_that_supports_it(self, zip39: Built, zip310: Built) -> None:
        """opentelemetry after 1.41.x needs Python >= 3.10: the 3.9 zip's opentelemetry-proto stays on 1.41.x."""
        v39 = zip39.versions()
        assert v39["opentelemetry-proto"].startswith("1.41.")
        assert Version(zip310.versions()["opentelemetry-proto"]) >= Version(v39["opentelemetry-proto"])

    def test_only_what_the_agent_imports(self, zip39: Built) -> None:
        """The zip holds the agent's runtime set: no OTLP exporter (fgext encodes OTLP itself), no grpcio, and
        neither the OpenTelemetry SDK nor the API nor what they pull in (the agent imports none of them)."""
        versions = zip39.versions()
        assert {"aiohttp", "opentelemetry-proto", "structlog", "fgext"} <= set(versions)
        for name in ("opentelemetry-exporter-otlp-proto-http", "opentelemetry-exporter-otlp-proto-grpc",
                     "opentelemetry-exporter-otlp-proto-common", "requests", "urllib3", "grpcio",
                     "opentelemetry-sdk", "opentelemetry-api", "opentelemetry-semantic-conventions",
                     "importlib-metadata", "zipp"):
            assert name not in versions, name
        assert not [n for n in zip39.names() if n.startswith(("extension/fgext-lib/opentelemetry/sdk/",
                                                              "extension/fgext-lib/opentelemetry/trace/"))]

    def test_no_developer_tools_in_the_zip(self, zip39: Built) -> None:
        """The developer tools (emulator, packager, publish) and the test helpers never run in the sandbox:
        the zip leaves them out."""
        names = zip39.names()
        assert "extension/fgext-lib/fgext/_bootstrap.py" in names
        for left_out in ("fgext/emulator/", "fgext/packager/", "fgext/publish/", "fgext/testing.py",
                         "fgext/_plugintest.py"):
            assert not any(name.startswith(f"extension/fgext-lib/{left_out}") for name in names), left_out


class TestReport:
    def test_one_distribution_count_throughout(self, zip39: Built) -> None:
        """The text report counts distributions once: the contributor header names the listed number."""
        import dataclasses
        import re

        from fgext.packager._build import Contributor
        from fgext.packager._report import render_build

        fields = {f.name for f in dataclasses.fields(BuildResult)}
        data = {key: value for key, value in zip39.report.items() if key in fields}
        data["contributors"] = [Contributor(**item) for item in data["contributors"]]
        text = render_build(BuildResult(**data))
        listed = int(re.search(r"^Distributions \((\d+)\):", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
        header = re.search(r"^Largest contributors \(top \d+ of (\d+) distributions", text, re.MULTILINE)
        assert header is not None and int(header.group(1)) == listed == len(zip39.versions()), text


class TestLayout:
    def test_launcher_is_the_repository_file_with_mode_0755(self, zip39: Built) -> None:
        """extension/extensionFgext.sh is byte-identical to the repository's launcher and stored as 0755."""
        with zip39.zip() as archive:
            info = archive.getinfo("extension/extensionFgext.sh")
            assert info.create_system == 3
            assert info.external_attr >> 16 == stat.S_IFREG | 0o755
            assert archive.read(info) == LAUNCHER.read_bytes()

    def test_plugins_and_config_are_included(self, zip39: Built) -> None:
        """Plugin module and package land in fgext-plugins (without '~' files); the config is verbatim."""
        names = zip39.names()
        assert "extension/fgext-plugins/marker_plugin.py" in names
        assert "extension/fgext-plugins/acme_plugins/__init__.py" in names
        assert "extension/fgext-plugins/acme_plugins/helpers.py" in names
        with zip39.zip() as archive:
            assert archive.read("extension/fgext.json") == (zip39.inputs / "fgext.json").read_bytes()
        assert not any(n.rstrip("/").endswith("~") for n in names)

    def test_extra_requirement_is_installed_into_fgext_lib(self, zip39: Built) -> None:
        """--requirement adds a distribution (with its metadata) to fgext-lib."""
        assert "six" in zip39.versions()
        assert "extension/fgext-lib/six.py" in zip39.names()
        assert any(n.startswith("extension/fgext-lib/six-") and n.endswith(".dist-info/METADATA")
                   for n in zip39.names())

    def test_no_tests_no_foreign_bytecode_no_record(self, zip39: Built) -> None:
        """No tests folders, no byte code of other interpreters, no RECORD; the packager stays out."""
        names = zip39.names()
        assert not any("/tests/" in n or "/test/" in n for n in names)
        pycs = [n for n in names if n.endswith(".pyc")]
        assert pycs and all(".cpython-39." in n and "/__pycache__/" in n for n in pycs)
        assert not any(n.endswith((".dist-info/RECORD", ".pyi", ".c")) for n in names)
        assert not any(n.startswith("extension/fgext-lib/fgext/packager") for n in names)

    def test_entries_sorted_with_fixed_timestamps(self, zip39: Built) -> None:
        """Members are in name order and all carry the same fixed date."""
        with zip39.zip() as archive:
            infos = archive.infolist()
        assert [i.filename for i in infos] == sorted(i.filename for i in infos)
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}

    def test_deterministic_rebuild(self, zip39: Built, tmp_path: Path) -> None:
        """Building again from the same inputs gives a byte-identical zip."""
        again = cli_build(tmp_path / "again.zip", zip39.inputs, "Python3.9")
        assert again.path.read_bytes() == zip39.path.read_bytes()
        assert again.report["sha256"] == zip39.report["sha256"]

    def test_bytecode_is_unchecked_hash_for_the_target(self, zip39: Built, zip310: Built) -> None:
        """Every .pyc starts with the target interpreter's magic number and the unchecked-hash flags."""
        assert PY39 is not None and PY310 is not None
        for built, python in ((zip39, PY39), (zip310, PY310)):
            magic = magic_number(python)
            with built.zip() as archive:
                pycs = [n for n in archive.namelist() if n.endswith(".pyc")]
                assert len(pycs) == built.report["bytecode"]["compiled"] > 100
                for name in pycs:
                    header = archive.read(name)[:8]
                    assert header[:4] == magic, name
                    assert int.from_bytes(header[4:8], "little") == 0b01, name  # hash-based, unchecked

    def test_report_names_sizes_and_contributors(self, zip39: Built) -> None:
        """The JSON report carries sizes that match the file and the largest contributors first."""
        report = zip39.report
        assert report["compressed"] == zip39.path.stat().st_size
        with zip39.zip() as archive:
            files = [i for i in archive.infolist() if not i.is_dir()]
        assert report["files"] == len(files)
        assert report["unpacked"] == sum(i.file_size for i in files)
        sizes = [c["unpacked"] for c in report["contributors"]]
        assert sizes == sorted(sizes, reverse=True)
        assert report["contributors"][0]["name"].startswith("aiohttp ")
        assert report["needs_obs"] is False and report["warnings"] == []

    def test_check_passes_the_built_zips(self, zip39: Built, zip310: Built) -> None:
        """``fgext check`` finds nothing wrong in what ``fgext package`` built."""
        for built, runtime in ((zip39, "Python3.9"), (zip310, "Python3.10")):
            done = run_cli("check", str(built.path), "--runtime", runtime, "--strict")
            assert done.returncode == 0, done.stdout
            assert done.stdout.strip().endswith(": ok")


class TestUnpackedTree:
    @needs_py39
    def test_imports_with_nothing_but_the_zip(self, zip39: Built, tmp_path: Path) -> None:
        """Python 3.9 without site-packages imports fgext and its stack from fgext-lib, metadata included."""
        assert PY39 is not None
        extension = unpack(zip39, tmp_path)
        code = (
            "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
            "import fgext, aiohttp.web, structlog, async_timeout, marker_plugin\n"
            "import fgext.otlp._plugin, fgext._agent\n"
            "from opentelemetry.proto.trace.v1.trace_pb2 import Span\n"
            "from importlib.metadata import version\n"
            "from fgext._discovery import _entry_points\n"
            "import json\n"
            "print(json.dumps({'fgext': fgext.__file__, 'aiohttp': aiohttp.__file__,\n"
            "  'proto': version('opentelemetry-proto'),\n"
            "  'fgext_plugins': sorted(_entry_points()), 'site': 'site' in sys.modules}))\n"
        )
        done = subprocess.run([PY39, "-S", "-E", "-c", code, str(extension / "fgext-lib"),
                               str(extension / "fgext-plugins")], capture_output=True, text=True,
                              timeout=60, check=False, env={"PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        assert seen["fgext"].startswith(str(extension / "fgext-lib"))
        assert seen["aiohttp"].startswith(str(extension / "fgext-lib"))
        assert seen["proto"] == zip39.versions()["opentelemetry-proto"]
        assert "jsonl" in seen["fgext_plugins"]
        assert seen["site"] is False

    @needs_py39
    def test_shipped_bytecode_is_used_without_checking_sources(self, zip39: Built, tmp_path: Path) -> None:
        """A source changed after unpacking is not recompiled: the interpreter runs the shipped .pyc."""
        assert PY39 is not None
        lib = unpack(zip39, tmp_path) / "fgext-lib"
        source = lib / "async_timeout" / "__init__.py"
        source.write_text("raise RuntimeError('the source was compiled instead of the shipped .pyc')\n")
        done = subprocess.run([PY39, "-S", "-E", "-B", "-c",
                               "import sys; sys.path.insert(0, sys.argv[1]); import async_timeout; "
                               "print(async_timeout.timeout)", str(lib)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr

    @needs_py39
    @pytest.mark.agent
    def test_launcher_registers_from_a_read_only_unpacked_zip(
            self, zip39: Built, tmp_path: Path, port_range_lock: None) -> None:
        """Unpacked read-only, the zip's launcher starts the agent on 3.9 without site-packages; it registers
        and starts the shipped plugin with the shipped config."""
        assert PY39 is not None
        extension = unpack(zip39, tmp_path / "code")
        wrapper = tmp_path / "python3.9-nosite"
        wrapper.write_text(f'#!/bin/sh\nexec {PY39} -S "$@"\n')
        wrapper.chmod(0o755)
        marker = json.loads((extension / "fgext.json").read_text())["plugins"]["marker"]["path"]
        if os.path.exists(marker):
            os.unlink(marker)
        subprocess.run(["chmod", "-R", "a-w", str(tmp_path / "code")], check=True)
        platform = RecordingPlatform().start()
        agent = AgentProcess(tmp_path, {"EXTENSION_API_ADDR": platform.addr, "FGEXT_PYTHON": str(wrapper),
                                        "FGEXT_PLUGINS": "marker_plugin:MarkerPlugin"},
                             launcher=extension / "extensionFgext.sh")
        try:
            seen = platform.wait_for(lambda r: any(x.path == "/extension/register" for x in r), timeout=30)
            register = next(x for x in seen if x.path == "/extension/register")
            assert register.headers["FunctionGraph-Extension-Name"] == "extensionFgext.sh"
            agent.wait_log("pipeline started", timeout=30)
            assert Path(marker).read_text() == "started on 3.9"
        finally:
            agent.stop()
            platform.stop()
            subprocess.run(["chmod", "-R", "u+w", str(tmp_path / "code")], check=False)


HAS_EMULATE_AND_OTLP = all(importlib.util.find_spec(m) is not None for m in ("fgext.emulator", "oteltap")) and \
    (ROOT / "fgext" / "otlp").is_dir()


@needs_py39
@pytest.mark.agent
@pytest.mark.skipif(not HAS_EMULATE_AND_OTLP, reason="needs fgext.emulator, fgext.otlp and oteltap in this tree")
def test_zip_under_emulate_sends_spans_to_a_third_party_receiver(
        zip39: Built, tmp_path: Path, port_range_lock: None, tap_factory: Callable[[int], OtelTap]) -> None:
    """`fgext emulate` runs the 3.9 zip without site-packages; spans of the sample function reach oteltap,
    which stays up for the whole run (the emulator counts an export the agent could not make as a problem)."""
    wrapper = tmp_path / "python3.9-nosite"
    wrapper.write_text(f'#!/bin/sh\nexec {PY39} -S "$@"\n')
    wrapper.chmod(0o755)
    tap = tap_factory(free_port())
    tap.start()
    done = run_cli("emulate", str(zip39.path), "-n", "2", "--env", f"FGEXT_PYTHON={wrapper}",
                   "--env", f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{tap.port}",
                   "--env", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", "--env", "FGEXT_PLUGINS=otlp")
    assert done.returncode == 0, done.stdout + done.stderr

    def has_invoke(spans: List[Dict[str, Any]]) -> bool:
        return any(span.get("name") == "invoke" for span in spans)

    asyncio.run(tap.wait("spans", has_invoke, timeout=20))


@needs_py39
def test_with_grpc_adds_grpcio_that_the_agent_imports(pip_cache: None, tmp_path: Path) -> None:
    """--with-grpc ships grpcio (what the gRPC transport calls), no exporter; it imports on 3.9 without site."""
    out = tmp_path / "grpc.zip"
    result = build(BuildOptions(output=out, runtime="Python3.9", with_grpc=True, strip=False))
    built = Built(out, json.loads(json.dumps(result.to_dict(), default=lambda o: o.__dict__)), tmp_path)
    versions = built.versions()
    assert "grpcio" in versions and not any("exporter" in name for name in versions), versions
    extension = unpack(built, tmp_path / "unpacked")
    code = ("import sys; sys.path[:0] = [sys.argv[1]]\n"
            "from fgext.otlp._transports import _load_grpc\n"
            "print(_load_grpc().__name__)")
    done = subprocess.run([str(PY39), "-S", "-E", "-c", code, str(extension / "fgext-lib")], capture_output=True,
                          text=True, timeout=120, check=False, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.strip() == "grpc", done.stderr

class TestBytecode:
    SOURCE = (
        '"""The module\'s docstring."""\n'
        "from __future__ import annotations\n"
        "class OnlyDoc:\n    \"\"\"Nothing but a docstring.\"\"\"\n"
        "def checked(x: int) -> int:\n    \"\"\"Doubles x.\"\"\"\n"
        "    assert x > 0, 'x must be positive'\n    return 2 * x\n"
    )

    def test_docstrings_left_out_asserts_kept(self, tmp_path: Path) -> None:
        """Stripped byte code runs without docstrings (module, class, function) and still raises on a failed assert;
        unstripped keeps them; the .pyc is used although the source says otherwise."""
        from fgext.packager._compile import compile_tree

        stripped, kept = tmp_path / "stripped", tmp_path / "kept"
        for folder in (stripped, kept):
            folder.mkdir()
            (folder / "sample.py").write_text(self.SOURCE)
        result = compile_tree(sys.executable, [(stripped, "lib", True), (kept, "plugins", False)])
        assert result["compiled"] == 2 and result["failed"] == []
        code = ("import sys; sys.path.insert(0, sys.argv[1]); import sample\n"
                "try:\n    sample.checked(0)\nexcept AssertionError as error:\n    failed = str(error)\n"
                "print(repr((sample.__doc__, sample.OnlyDoc.__doc__, sample.checked.__doc__, sample.checked(2),"
                " failed)))")
        seen = {}
        for folder in (stripped, kept):
            (folder / "sample.py").write_text("raise RuntimeError('the source was compiled')\n")
            done = subprocess.run([sys.executable, "-B", "-c", code, str(folder)], capture_output=True, text=True,
                                  timeout=60, check=False)
            assert done.returncode == 0, done.stderr
            seen[folder.name] = done.stdout.strip()
        assert seen["stripped"] == repr((None, None, None, 4, "x must be positive"))
        assert seen["kept"] == repr(("The module's docstring.", "Nothing but a docstring.", "Doubles x.", 4,
                                     "x must be positive"))

    ANNOTATED = (
        "from __future__ import annotations\n"
        "import dataclasses\n"
        "LIMIT: int = 3\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class Point:\n    x: int\n    y: int = 0\n"
        "    def moved(self, dx: int, *rest: int, by: float = 1.0, **more: str) -> Point:\n"
        "        return Point(self.x + dx, self.y)\n"
        "async def fetch(url: str) -> bytes:\n    return b''\n"
        "def run(a: int, /, b: str) -> None:\n    pass\n"
    )
    REPORT = ("import sys; sys.path.insert(0, sys.argv[1]); import sample, dataclasses\n"
              "print(repr((sample.Point.moved.__annotations__, sample.fetch.__annotations__,"
              " sample.run.__annotations__, sample.Point.__annotations__, sample.__annotations__,"
              " [f.name for f in dataclasses.fields(sample.Point)], str(sample.Point(1).moved(2)))))")

    def test_listed_files_lose_function_annotations_not_class_ones(self, tmp_path: Path) -> None:
        """A file listed in ``bare`` of a stripped root loses its functions' parameter and return annotations and
        keeps its class and module variable annotations (a dataclass still has its fields); a file not listed,
        or listed under an unstripped root, keeps them all."""
        from fgext.packager._compile import compile_tree

        roots = {name: tmp_path / name for name in ("bare", "listed_unstripped", "unlisted")}
        for folder in roots.values():
            folder.mkdir()
            (folder / "sample.py").write_text(self.ANNOTATED)
        (roots["unlisted"] / "other.py").write_text("")
        result = compile_tree(sys.executable, [(roots["bare"], "lib", True), (roots["listed_unstripped"], "plugins",
                                                                              False)], bare={"sample.py"})
        assert result["compiled"] == 2 and result["failed"] == []
        assert compile_tree(sys.executable, [(roots["unlisted"], "lib", True)], bare={"other.py"})["compiled"] == 2
        seen = {}
        for name, folder in roots.items():
            (folder / "sample.py").write_text("raise RuntimeError('the source was compiled')\n")
            done = subprocess.run([sys.executable, "-B", "-c", self.REPORT, str(folder)], capture_output=True,
                                  text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
            seen[name] = done.stdout.strip()
        fields = ({"x": "int", "y": "int"}, {"LIMIT": "int"}, ["x", "y"], "Point(x=3, y=0)")
        assert ast.literal_eval(seen["bare"]) == ({}, {}, {}, *fields)
        annotated = ({"dx": "int", "rest": "int", "by": "float", "more": "str", "return": "Point"},
                     {"url": "str", "return": "bytes"}, {"a": "int", "b": "str", "return": "None"})
        for name in ("listed_unstripped", "unlisted"):
            assert ast.literal_eval(seen[name]) == (*annotated, *fields), name

    def test_relative_interpreter_path(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """--python given relative to the current folder compiles too (the compiler runs in another folder)."""
        from fgext.packager._compile import compile_tree

        (tmp_path / "lib").mkdir()
        (tmp_path / "lib" / "sample.py").write_text(self.SOURCE)
        monkeypatch.chdir("/")
        result = compile_tree(os.path.relpath(sys.executable, "/"), [(tmp_path / "lib", "lib", True)])
        assert result["compiled"] == 1 and result["failed"] == []

    @needs_py39
    def test_zip_libraries_without_docstrings_plugins_with(self, zip39: Built, tmp_path: Path) -> None:
        """In the zip, fgext-lib's modules (fgext, aiohttp) load without docstrings; a fgext-plugins module keeps
        its own."""
        extension = unpack(zip39, tmp_path)
        code = ("import fgext._agent, aiohttp.web, acme_plugins\n"
                "print(repr((fgext._agent.__doc__, aiohttp.web.run_app.__doc__, acme_plugins.__doc__)))")
        assert run_in_zip(extension, code) == repr((None, None, "A plugin package."))

    @needs_py39
    def test_zip_agent_functions_without_annotations_plugins_with(self, zip39: Built, tmp_path: Path) -> None:
        """In the zip, the functions of fgext and of aiohttp have no annotations while fgext's events keep their
        dataclass fields; a fgext-plugins function keeps its annotations."""
        extension = unpack(zip39, tmp_path)
        code = ("import dataclasses, fgext._agent, fgext._events, aiohttp.web, acme_plugins.helpers\n"
                "print(repr((fgext._agent.serve.__annotations__, aiohttp.web.run_app.__annotations__,"
                " [f.name for f in dataclasses.fields(fgext._events.Start)],"
                " acme_plugins.helpers.double.__annotations__)))")
        fields = ["name", "start_ns", "raw", "request_id"]
        assert run_in_zip(extension, code) == repr(({}, {}, fields, {"x": int, "return": int}))


def test_agent_sources_are_the_agent_runtimes_closure(tmp_path: Path) -> None:
    """The files whose annotations go are fgext's and those of AGENT_RUNTIME's distributions and their
    requirements for the target (markers evaluated for it, extras not followed); a --requirement's own
    distribution and fgext's own requirements are not among them, nor are files that are not Python."""
    from fgext.packager._build import _agent_sources

    requires = {
        "aiohttp-3.13.5": ["multidict<7,>=4.5", "async-timeout<6,>=4; python_version < '3.11'",
                           "brotli; extra == 'speedups'"],
        "multidict-6.7.1": ["typing-extensions>=4.1; python_version < '3.11'"],
        "structlog-25.5.0": [], "opentelemetry_proto-1.41.1": ["protobuf<7,>=5"], "protobuf-6.33.6": [],
        "async_timeout-5.0.1": [], "typing_extensions-4.16.0": [], "Brotli-1.1": [],
        "fgext-0.1.0": ["opentelemetry-sdk>=1.41"], "opentelemetry_sdk-1.41.1": [],
        "six-1.17.0": ["typing-extensions"],
    }
    installed: Dict[str, str] = {}
    for dist, lines in requires.items():
        info = tmp_path / f"{dist}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\n" + "".join(f"Requires-Dist: {line}\n"
                                                                             for line in lines))
        name, _, version = dist.partition("-")
        installed[f"{name.lower()}/__init__.py"] = f"{name} {version}"
        installed[f"{name.lower()}/data.json"] = f"{name} {version}"
    got = {path.split("/")[0] for path in _agent_sources(tmp_path, installed, RUNTIMES["Python3.9"], "x86_64", False)}
    assert got == {"aiohttp", "multidict", "structlog", "opentelemetry_proto", "protobuf", "async_timeout",
                   "typing_extensions", "fgext"}
    assert all(path.endswith(".py") for path in _agent_sources(tmp_path, installed, RUNTIMES["Python3.9"],
                                                                "x86_64", False))


class TestCommandLine:
    @pytest.mark.parametrize("runtime, words", [
        ("Python2.7", "too old"), ("Python3.6", "too old"), ("Node.js14", "Python runtime"),
        ("Java11", "Python runtime"), ("Python3.11", "not a FunctionGraph runtime"),
    ])
    def test_unsupported_runtime_says_what_to_do(self, runtime: str, words: str, tmp_path: Path) -> None:
        """An unsupported runtime exits 2 with a message naming the supported ones, no traceback."""
        done = run_cli("package", "-o", str(tmp_path / "x.zip"), "--runtime", runtime)
        assert done.returncode == 2
        assert words in done.stderr and "Python3.9" in done.stderr
        assert "Traceback" not in done.stderr
        assert not (tmp_path / "x.zip").exists()

    @pytest.mark.parametrize("flag, value, words", [
        ("--name", "fgext.sh", "extension*.sh"),
        ("--name", "extension/evil.sh", "extension*.sh"),
        ("--plugin", "/nonexistent/plugin.py", "no such file"),
        ("--requirement", "not a valid ((requirement", "not a valid requirement"),
        ("--python", "/bin/true", "not a Python interpreter"),
    ])
    def test_bad_flags_are_usage_errors(self, flag: str, value: str, words: str, tmp_path: Path) -> None:
        """Bad flag values exit 2 with a message that names the flag, before any download."""
        done = run_cli("package", "-o", str(tmp_path / "x.zip"), flag, value)
        assert done.returncode == 2, done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr

    def test_bad_config_is_a_usage_error(self, tmp_path: Path) -> None:
        """A config file that is not a JSON object is refused with exit 2."""
        config = tmp_path / "fgext.json"
        config.write_text("[1, 2")
        done = run_cli("package", "-o", str(tmp_path / "x.zip"), "--config", str(config))
        assert done.returncode == 2 and "not valid JSON" in done.stderr

    @needs_py310
    def test_python_of_the_wrong_version_is_refused(self, tmp_path: Path) -> None:
        """--python must be an interpreter of the target's version."""
        assert PY310 is not None
        done = run_cli("package", "-o", str(tmp_path / "x.zip"), "--runtime", "Python3.9", "--python", PY310)
        assert done.returncode == 2 and "needs Python 3.9" in done.stderr


class TestPluginRefusals:
    @pytest.mark.parametrize("file_name, source, words", [
        ("email.py", "X = 1\n", "name of a standard-library module"),
        ("broken.py", "def f(:\n    pass\n", "does not compile for Python 3.9"),
        ("newsyntax.py", "match x:\n    case 1:\n        pass\n", "does not compile for Python 3.9"),
    ])
    def test_refused_before_anything_is_built(self, file_name: str, source: str, words: str,
                                              tmp_path: Path) -> None:
        """A plugin that shadows the standard library or does not compile for the target: exit 1, one line."""
        plugin = tmp_path / file_name
        plugin.write_text(source)
        done = run_cli("package", "-o", str(tmp_path / "x.zip"), "--plugin", str(plugin), "--quiet")
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and str(plugin) in lines[0] and words in lines[0], done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "x.zip").exists()

    def test_plugin_named_like_a_bundled_distribution(self, pip_cache: None, tmp_path: Path) -> None:
        """A plugin called yarl.py would be hidden by the bundled yarl: exit 1, one line, no zip."""
        plugin = tmp_path / "yarl.py"
        plugin.write_text("X = 1\n")
        done = run_cli("package", "-o", str(tmp_path / "x.zip"), "--plugin", str(plugin), "--quiet",
                       "--no-compile", "--no-strip")
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "'yarl' is also the name of a module in fgext-lib" in lines[0], done.stderr
        assert not (tmp_path / "x.zip").exists()


def test_launcher_and_constraints_ship_as_package_data() -> None:
    """The launcher and packaging/ are reachable through fgext/packager/_data, as a wheel would carry them."""
    from fgext.packager import _assets

    assert _assets.launcher().read_bytes() == LAUNCHER.read_bytes()
    constraints = _assets.constraints_file("Python3.9")
    assert constraints is not None and "opentelemetry-sdk<1.42" in constraints.read_text()
    assert shutil.which("unzip"), "the end-to-end tests unpack with Info-ZIP's unzip"


@pytest.mark.skipif('"fgext.packager"' not in (ROOT / "pyproject.toml").read_text(),
                    reason="pyproject.toml has no package-data entry for fgext.packager yet")
def test_wheel_of_the_repository_carries_launcher_and_constraints(tmp_path: Path) -> None:
    """``pip wheel .`` of the repository ships the launcher and packaging/ so an installed fgext can build."""
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                           str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PIP_CACHE_DIR": PIP_CACHE}, check=False)
    assert done.returncode == 0, done.stderr
    wheel = next((tmp_path / "dist").glob("fgext-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        launcher = archive.read("fgext/packager/_data/extensionFgext.sh")
    assert launcher == LAUNCHER.read_bytes()
    assert "fgext/packager/_data/packaging/constraints/Python3.9.txt" in names
