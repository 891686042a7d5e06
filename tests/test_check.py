"""``fgext check`` on hand-made zips: each broken rule is named; a clean zip passes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import pytest

from fgext._errors import ConfigError
from fgext.packager import Finding, check_zip
from fgext.packager._inspect import MAGIC_NUMBERS
from fgext.packager._runtimes import RUNTIMES, find_interpreter
from tests.conftest import ROOT

SCRIPT = b"#!/bin/sh\nexec python3 -m myext\n"
Member = Tuple[str, Union[bytes, None], int]  # name, data (None: directory), Unix mode (0: none stored)


def make_zip(path: Path, members: List[Member], *, system: int = 3,
             compress: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.create_system = system
            kind = stat.S_IFDIR if data is None else (mode >> 12 << 12 or stat.S_IFREG)
            info.external_attr = ((kind | (mode & 0o7777)) << 16) if mode else 0
            info.compress_type = compress
            archive.writestr(info, data or b"")
    return path


def good_members() -> List[Member]:
    return [("extension/", None, 0o755), ("extension/extensionDemo.sh", SCRIPT, 0o755),
            ("extension/demo.py", b"print('hi')\n", 0o644)]


def codes(findings: List[Finding], severity: Optional[str] = None) -> Dict[str, Finding]:
    return {f.code: f for f in findings if severity is None or f.severity == severity}


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fgext", "check", *args], capture_output=True, text=True,
                          cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
                          check=False)


class TestCleanZip:
    def test_hand_made_zip_passes(self, tmp_path: Path) -> None:
        """A minimal hand-made extension zip has no findings and the command exits 0."""
        path = make_zip(tmp_path / "demo-ext.zip", good_members())
        assert check_zip(path) == []
        done = run_check(str(path))
        assert done.returncode == 0 and done.stdout.strip().endswith(": ok")


class TestLayoutRules:
    def test_missing_extension_folder(self, tmp_path: Path) -> None:
        """A zip without a top-level extension/ folder is refused."""
        path = make_zip(tmp_path / "demo.zip", [("extensionDemo.sh", SCRIPT, 0o755)])
        assert "no-extension-dir" in codes(check_zip(path), "error")

    def test_nested_extension_folder_gets_a_hint(self, tmp_path: Path) -> None:
        """When extension/ sits inside another folder the message says to zip that folder's contents."""
        path = make_zip(tmp_path / "demo.zip", [("myext/extension/extensionDemo.sh", SCRIPT, 0o755)])
        finding = codes(check_zip(path))["no-extension-dir"]
        assert "'myext'" in finding.message and "contents" in finding.message

    def test_missing_launcher(self, tmp_path: Path) -> None:
        """extension/ without an extension*.sh script is refused; a script elsewhere does not count."""
        path = make_zip(tmp_path / "demo.zip", [("extension/start.sh", SCRIPT, 0o755),
                                                 ("extension/sub/extensionX.sh", SCRIPT, 0o755)])
        assert "no-launcher" in codes(check_zip(path), "error")

    def test_launcher_without_execute_bit(self, tmp_path: Path) -> None:
        """A start script stored as 0644 is named with its mode."""
        members = good_members()
        members[1] = ("extension/extensionDemo.sh", SCRIPT, 0o644)
        finding = codes(check_zip(make_zip(tmp_path / "demo.zip", members)))["launcher-not-executable"]
        assert finding.path == "extension/extensionDemo.sh" and "0644" in finding.message

    def test_launcher_without_unix_mode(self, tmp_path: Path) -> None:
        """A zip made on Windows stores no mode bits, so the script cannot be executed."""
        path = make_zip(tmp_path / "demo.zip", good_members(), system=0)
        assert "launcher-no-mode" in codes(check_zip(path), "error")

    @pytest.mark.parametrize("content, code", [
        (b"#!/bin/sh\r\nexec python3 -m myext\r\n", "launcher-crlf"),
        (b"exec python3 -m myext\n", "launcher-no-shebang"),
        (b"\xef\xbb\xbf#!/bin/sh\nexec python3 -m myext\n", "launcher-bom"),
    ])
    def test_launcher_content_problems(self, tmp_path: Path, content: bytes, code: str) -> None:
        """CRLF line endings, a missing '#!' line and a byte order mark are each named."""
        members = good_members()
        members[1] = ("extension/extensionDemo.sh", content, 0o755)
        assert code in codes(check_zip(make_zip(tmp_path / "demo.zip", members)), "error")

    def test_crlf_on_the_shebang_line_is_explained(self, tmp_path: Path) -> None:
        """A CRLF '#!' line is called out: the kernel looks for an interpreter name ending in CR."""
        members = good_members()
        members[1] = ("extension/extensionDemo.sh", b"#!/bin/sh\r\necho\r\n", 0o755)
        finding = codes(check_zip(make_zip(tmp_path / "demo.zip", members)))["launcher-crlf"]
        assert "'#!' line" in finding.message

    def test_too_many_launchers(self, tmp_path: Path) -> None:
        """More than ten start scripts exceed the platform's extensions per function."""
        members = [*good_members(), *[(f"extension/extension{i}.sh", SCRIPT, 0o755) for i in range(10)]]
        assert "too-many-extensions" in codes(check_zip(make_zip(tmp_path / "demo.zip", members)), "error")

    def test_fgext_lib_without_fgext(self, tmp_path: Path) -> None:
        """An fgext-lib folder without the fgext package would fail at import and is named."""
        members = [*good_members(), ("extension/fgext-lib/aiohttp/__init__.py", b"", 0o644)]
        assert "fgext-missing" in codes(check_zip(make_zip(tmp_path / "demo.zip", members)), "error")


class TestFunctionHelper:
    def test_the_helper_without_the_sdk_is_named(self, tmp_path: Path) -> None:
        """A top-level fgext/function.py without the SDK and the OTLP encoder is an error naming both."""
        members = [*good_members(), ("fgext/__init__.py", b"", 0o644), ("fgext/function.py", b"", 0o644)]
        finding = codes(check_zip(make_zip(tmp_path / "demo.zip", members)), "error")["function-helper-incomplete"]
        assert "opentelemetry-sdk" in finding.message and "opentelemetry-exporter-otlp-proto-common" in finding.message

    def test_the_helper_with_what_it_imports_is_fine(self, tmp_path: Path) -> None:
        """With opentelemetry/sdk and the OTLP encoder beside it, nothing is found."""
        members = [*good_members(), ("fgext/__init__.py", b"", 0o644), ("fgext/function.py", b"", 0o644),
                   ("opentelemetry/sdk/trace/__init__.py", b"", 0o644),
                   ("opentelemetry/exporter/otlp/proto/common/__init__.py", b"", 0o644)]
        assert check_zip(make_zip(tmp_path / "demo.zip", members)) == []


class TestPathRules:
    @pytest.mark.parametrize("name, code", [
        ("extension/../../etc/passwd", "path-traversal"),
        ("/extension/abs.py", "absolute-path"),
        ("extension\\win.py", "backslash-path"),
        ("extension/notes.txt~", "backup-name"),
        ("extension/old~/x.py", "backup-name"),
    ])
    def test_unsafe_or_refused_names(self, tmp_path: Path, name: str, code: str) -> None:
        """Traversal, absolute and backslash paths and names ending in '~' are each named with the path."""
        path = make_zip(tmp_path / "demo.zip", [*good_members(), (name, b"x", 0o644)])
        finding = codes(check_zip(path), "error")[code]
        assert finding.path == name

    def test_duplicate_members(self, tmp_path: Path) -> None:
        """Two members with one name are an error."""
        path = tmp_path / "demo.zip"
        make_zip(path, good_members())
        with pytest.warns(UserWarning), zipfile.ZipFile(path, "a") as archive:
            archive.writestr("extension/demo.py", b"again\n")
        assert codes(check_zip(path), "error")["duplicate-entry"].path == "extension/demo.py"

    def test_symlink_out_of_the_tree(self, tmp_path: Path) -> None:
        """A symbolic link member pointing outside the unpack folder is refused; one inside is fine."""
        members = [*good_members(), ("extension/inside", b"demo.py", stat.S_IFLNK | 0o777),
                   ("extension/outside", b"../../etc/shadow", stat.S_IFLNK | 0o777)]
        found = [f for f in check_zip(make_zip(tmp_path / "demo.zip", members)) if f.code == "unsafe-symlink"]
        assert [f.path for f in found] == ["extension/outside"]

    def test_unusual_compression_warns(self, tmp_path: Path) -> None:
        """A member compressed with bzip2 is a warning, not an error."""
        path = make_zip(tmp_path / "demo.zip", good_members(), compress=zipfile.ZIP_BZIP2)
        findings = check_zip(path)
        assert "compression" in codes(findings, "warning") and not codes(findings, "error")


class TestLimits:
    def test_too_many_files(self, tmp_path: Path) -> None:
        """30,001 files exceed the dependency limit of 30,000."""
        path = tmp_path / "many.zip"
        make_zip(path, good_members())
        with zipfile.ZipFile(path, "a") as archive:
            for index in range(30_001 - 2):
                archive.writestr(f"extension/data/{index}.txt", b"")
        assert "too-many-files" in codes(check_zip(path), "error")
        assert "too-many-files" not in codes(check_zip(make_zip(tmp_path / "few.zip", good_members())))

    def test_too_large_unpacked(self, tmp_path: Path) -> None:
        """A zip that unpacks to more than 300 MB is refused even though it is small compressed."""
        path = make_zip(tmp_path / "big.zip", [*good_members(), ("extension/zeros.bin", bytes(301 << 20), 0o644)])
        assert path.stat().st_size < (5 << 20)
        finding = codes(check_zip(path), "error")["too-large-unpacked"]
        assert "300.0 MB" in finding.message

    def test_above_inline_limit_says_obs(self, tmp_path: Path) -> None:
        """Above 40 MB the zip is still valid, with a warning that it must go through OBS."""
        members = [*good_members(), ("extension/random.bin", os.urandom((40 << 20) + 1024), 0o644)]
        path = make_zip(tmp_path / "large-ext.zip", members, compress=zipfile.ZIP_STORED)
        findings = check_zip(path)
        assert not codes(findings, "error")
        assert "depend_type obs" in codes(findings, "warning")["needs-obs"].message
        assert run_check(str(path)).returncode == 0
        strict = run_check(str(path), "--strict")
        assert strict.returncode == 1
        assert strict.stdout.rstrip().endswith("1 warning(s), which fail in --strict mode") and "ok" not in \
            strict.stdout.splitlines()[-1]


class TestNamesAndBytecode:
    @pytest.mark.parametrize("name, valid", [
        ("fgext", True), ("fgext-py39_1.0", True), ("1fgext", False), ("fgext-", False), ("a" * 97, False),
        ("a" * 96, True), ("fg ext", False),
    ])
    def test_dependency_name_rules(self, tmp_path: Path, name: str, valid: bool) -> None:
        """An explicit dependency name must follow the platform's rules; a bad one is an error."""
        findings = check_zip(make_zip(tmp_path / "demo.zip", good_members()), dependency_name=name)
        assert ("dependency-name" in codes(findings, "error")) is not valid

    def test_file_name_only_warns(self, tmp_path: Path) -> None:
        """A file name that is not a valid dependency name only warns: the name is chosen on upload."""
        findings = check_zip(make_zip(tmp_path / "_ext.zip", good_members()))
        assert "dependency-name" in codes(findings, "warning") and not codes(findings, "error")

    def test_timestamp_and_foreign_bytecode(self, tmp_path: Path) -> None:
        """Timestamp-based .pyc and byte code for another interpreter are warnings naming the cause."""
        timestamp_pyc = b"\x61\x0d\x0d\x0a" + bytes(4) + bytes(8) + b"\xe3"
        hash_pyc = b"\x61\x0d\x0d\x0a" + (1).to_bytes(4, "little") + bytes(8) + b"\xe3"
        members = [*good_members(), ("extension/lib/__pycache__/a.cpython-39.pyc", timestamp_pyc, 0o644),
                   ("extension/lib/__pycache__/b.cpython-39.pyc", hash_pyc, 0o644),
                   ("extension/lib/__pycache__/c.cpython-311.pyc", hash_pyc, 0o644)]
        path = make_zip(tmp_path / "demo.zip", members)
        found = codes(check_zip(path, runtime_tag="cpython-39"), "warning")
        assert "2 .pyc" not in found["timestamp-bytecode"].message
        assert found["timestamp-bytecode"].message.startswith("1 .pyc")
        assert "cpython-311" in found["foreign-bytecode"].message
        assert "mixed-bytecode" in codes(check_zip(path), "warning")


class TestCommandLine:
    def test_problems_exit_1_and_are_listed(self, tmp_path: Path) -> None:
        """Each problem is one line naming its code and path; the exit code is 1."""
        members = good_members()
        members[1] = ("extension/extensionDemo.sh", b"#!/bin/sh\r\n", 0o644)
        path = make_zip(tmp_path / "demo.zip", [*members, ("extension/x~", b"", 0o644)])
        done = run_check(str(path))
        assert done.returncode == 1
        for code in ("launcher-not-executable", "launcher-crlf", "backup-name"):
            assert f"[{code}]" in done.stdout
        assert "3 problem(s)" in done.stdout

    def test_json_output(self, tmp_path: Path) -> None:
        """--json prints a machine-readable verdict with every finding."""
        import json

        path = make_zip(tmp_path / "demo.zip", [("extension/readme.txt", b"", 0o644)])
        done = run_check(str(path), "--json")
        data = json.loads(done.stdout)
        assert done.returncode == 1 and data["ok"] is False
        assert [f["code"] for f in data["findings"]] == ["no-launcher"]

    def test_not_a_zip_is_a_problem(self, tmp_path: Path) -> None:
        """A file that is not a zip is reported as a problem (exit 1), not a crash."""
        path = tmp_path / "demo.zip"
        path.write_bytes(b"PK but not really")
        done = run_check(str(path))
        assert done.returncode == 1 and "[not-a-zip]" in done.stdout and "Traceback" not in done.stderr

    def test_missing_file_is_a_usage_error(self, tmp_path: Path) -> None:
        """A path that does not exist exits 2 with a message, no traceback."""
        done = run_check(str(tmp_path / "nope.zip"))
        assert done.returncode == 2 and "no such file" in done.stderr and "Traceback" not in done.stderr
        with pytest.raises(ConfigError):
            check_zip(tmp_path / "nope.zip")

    def test_missing_argument_is_a_usage_error(self) -> None:
        """Without a zip argument argparse's usage error exits 2."""
        assert run_check().returncode == 2


def link(name: str, target: str) -> Member:
    return (name, target.encode(), stat.S_IFLNK | 0o777)


class TestSymlinkChains:
    def test_chain_that_escapes_is_refused(self, tmp_path: Path) -> None:
        """'self -> .' then 'esc -> self/../..' leaves the unpack folder: an error, though no target has '../..'."""
        members = [*good_members(), link("extension/self", "."), link("extension/esc", "self/../..")]
        findings = check_zip(make_zip(tmp_path / "demo.zip", members))
        errors = [f for f in findings if f.severity == "error"]
        assert [(f.code, f.path) for f in errors] == [("unsafe-symlink", "extension/esc")]
        done = run_check(str(tmp_path / "demo.zip"))
        assert done.returncode == 1 and "[unsafe-symlink] extension/esc:" in done.stdout

    def test_links_that_stay_inside_pass(self, tmp_path: Path) -> None:
        """Links resolving inside the zip, through other links too, are fine."""
        members = [*good_members(), ("extension/lib/", None, 0o755), ("extension/lib/a.py", b"", 0o644),
                   link("extension/self", "."), link("extension/l", "self/lib"), link("extension/a", "l/a.py")]
        assert not codes(check_zip(make_zip(tmp_path / "demo.zip", members)), "error")

    def test_member_written_through_an_escaping_link(self, tmp_path: Path) -> None:
        """A file stored below a link that leads outside would be written outside: an error for both."""
        members = [*good_members(), link("extension/out", "../.."), ("extension/out/evil.sh", b"x", 0o755)]
        found = codes(check_zip(make_zip(tmp_path / "demo.zip", members)), "error")
        assert found["unsafe-symlink"].path == "extension/out"
        assert found["path-through-symlink"].path == "extension/out/evil.sh"

    def test_link_loop(self, tmp_path: Path) -> None:
        """Two links pointing at each other never resolve: an error, not a hang."""
        members = [*good_members(), link("extension/a", "b"), link("extension/b", "a")]
        assert "symlink-loop" in codes(check_zip(make_zip(tmp_path / "demo.zip", members)), "error")


def pyc(version: Tuple[int, int]) -> bytes:
    return MAGIC_NUMBERS[version].to_bytes(2, "little") + b"\r\n" + (1).to_bytes(4, "little") + bytes(8) + b"\xe3"


def built_for_312() -> List[Member]:
    """What a zip resolved and compiled for Python 3.12 holds: cp312 wheels, .so and byte code."""
    return [*good_members(), ("extension/fgext-lib/fgext/__init__.py", b"", 0o644),
            ("extension/fgext-lib/multidict/__init__.py", b"", 0o644),
            ("extension/fgext-lib/multidict/__pycache__/__init__.cpython-312.pyc", pyc((3, 12)), 0o644),
            ("extension/fgext-lib/multidict/_multidict.cpython-312-x86_64-linux-gnu.so", b"\x7fELF", 0o755),
            ("extension/fgext-lib/multidict-6.0.5.dist-info/WHEEL",
             b"Wheel-Version: 1.0\nTag: cp312-cp312-manylinux_2_17_x86_64\nTag: cp312-cp312-manylinux2014_x86_64\n",
             0o644)]


class TestRuntimeMismatch:
    def test_zip_built_for_312_fails_for_39(self, tmp_path: Path) -> None:
        """--runtime Python3.9 on a zip built for 3.12: exit 1 naming the .so, the wheel and the byte code."""
        path = make_zip(tmp_path / "demo.zip", built_for_312())
        done = run_check(str(path), "--runtime", "Python3.9")
        assert done.returncode == 1, done.stdout
        for code in ("foreign-extension-module", "foreign-wheel", "foreign-bytecode"):
            assert f"error [{code}]" in done.stdout
        assert "multidict-6.0.5" in done.stdout and "Python 3.12" in done.stdout
        assert run_check(str(path), "--runtime", "Python3.12", "--arch", "x86_64").returncode == 0

    def test_other_machine_or_os(self, tmp_path: Path) -> None:
        """With --arch, aarch64 code fails an x86_64 check; macOS or Windows code fails any check."""
        members = [*good_members(),
                   ("extension/fgext-lib/a.cpython-39-aarch64-linux-gnu.so", b"", 0o755),
                   ("extension/fgext-lib/b.cpython-39-darwin.so", b"", 0o755),
                   ("extension/fgext-lib/c.pyd", b"", 0o644)]
        findings = check_zip(make_zip(tmp_path / "demo.zip", members), runtime_tag="cpython-39", arch="x86_64")
        flagged = sorted(f.path or "" for f in findings if f.code == "foreign-extension-module")
        assert flagged == ["extension/fgext-lib/a.cpython-39-aarch64-linux-gnu.so",
                           "extension/fgext-lib/b.cpython-39-darwin.so", "extension/fgext-lib/c.pyc"[:-1] + "d"]

    @pytest.mark.parametrize("tag, ok", [
        ("py3-none-any", True), ("cp39-cp39-manylinux_2_17_x86_64", True), ("cp38-abi3-manylinux2014_x86_64", True),
        ("cp311-abi3-manylinux2014_x86_64", False), ("cp39-cp39-macosx_11_0_arm64", False),
        ("cp39-cp39-musllinux_1_1_x86_64", False), ("cp310-cp310-manylinux2014_x86_64", False),
    ])
    def test_wheel_tags(self, tmp_path: Path, tag: str, ok: bool) -> None:
        """A wheel's tags decide: pure, same CPython, or an older abi3 on glibc Linux pass; the rest fail."""
        members = [*good_members(), ("extension/fgext-lib/x-1.dist-info/WHEEL", f"Tag: {tag}\n".encode(), 0o644)]
        findings = check_zip(make_zip(tmp_path / "demo.zip", members), runtime_tag="cpython-39")
        assert ("foreign-wheel" not in codes(findings, "error")) is ok

    def test_pyc_magic_is_read(self, tmp_path: Path) -> None:
        """A .pyc named for 3.9 but compiled by 3.12, or a sourceless one of 3.12, is a problem for 3.9."""
        members = [*good_members(), ("extension/lib/__pycache__/a.cpython-39.pyc", pyc((3, 12)), 0o644),
                   ("extension/lib/__pycache__/b.cpython-39.pyc", pyc((3, 9)), 0o644),
                   ("extension/lib/c.pyc", pyc((3, 12)), 0o644)]
        findings = check_zip(make_zip(tmp_path / "demo.zip", members), runtime_tag="cpython-39")
        assert sorted(f.path or "" for f in findings if f.code == "foreign-bytecode") == [
            "extension/lib/__pycache__/a.cpython-39.pyc", "extension/lib/c.pyc"]

    @pytest.mark.parametrize("version", [(3, 9), (3, 10), (3, 12)])
    def test_magic_table_matches_the_interpreters(self, version: Tuple[int, int]) -> None:
        """The table of magic numbers is what each installed interpreter really writes."""
        python = find_interpreter(RUNTIMES[f"Python{version[0]}.{version[1]}"])
        if python is None:
            pytest.skip(f"no Python {version[0]}.{version[1]} on this machine")
        done = subprocess.run([python, "-I", "-c", "import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())"],
                              capture_output=True, text=True, check=True, timeout=30)
        assert bytes.fromhex(done.stdout.strip())[:2] == MAGIC_NUMBERS[version].to_bytes(2, "little")


class TestPlugins:
    def test_plugin_named_like_a_stdlib_module(self, tmp_path: Path) -> None:
        """A plugin called email.py would never load (the standard library comes first): an error."""
        members = [*good_members(), ("extension/fgext-plugins/email.py", b"X = 1\n", 0o644)]
        done = run_check(str(make_zip(tmp_path / "demo.zip", members)))
        assert done.returncode == 1
        assert "error [plugin-shadows-stdlib] extension/fgext-plugins/email:" in done.stdout

    def test_plugin_named_like_a_bundled_module(self, tmp_path: Path) -> None:
        """A plugin package with the name of a distribution in fgext-lib is hidden by it: an error."""
        members = [*good_members(), ("extension/fgext-lib/fgext/__init__.py", b"", 0o644),
                   ("extension/fgext-lib/yarl/__init__.py", b"", 0o644),
                   ("extension/fgext-plugins/yarl/__init__.py", b"", 0o644),
                   ("extension/fgext-plugins/mine.py", b"", 0o644)]
        found = [f for f in check_zip(make_zip(tmp_path / "demo.zip", members)) if f.severity == "error"]
        assert [(f.code, f.path) for f in found] == [("plugin-shadows-bundled", "extension/fgext-plugins/yarl")]

    def test_plugin_that_does_not_compile(self, tmp_path: Path) -> None:
        """A syntax error, or syntax newer than the runtime's Python, is an error naming the file and line."""
        members = [*good_members(), ("extension/fgext-plugins/broken.py", b"def f(:\n", 0o644),
                   ("extension/fgext-plugins/new.py", b"match x:\n    case 1:\n        pass\n", 0o644)]
        path = make_zip(tmp_path / "demo.zip", members)
        found = {f.path: f for f in check_zip(path, runtime_tag="cpython-39") if f.code == "plugin-does-not-compile"}
        assert set(found) == {"extension/fgext-plugins/broken.py", "extension/fgext-plugins/new.py"}
        assert "line 1" in found["extension/fgext-plugins/broken.py"].message
        assert "extension/fgext-plugins/new.py" not in {
            f.path for f in check_zip(path, runtime_tag="cpython-312") if f.code == "plugin-does-not-compile"}
