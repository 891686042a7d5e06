"""The sandbox: dependency zips unpacked safely, extension scripts found as the platform finds them."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from fgext._errors import ConfigError
from fgext.emulator._sandbox import find_scripts, prepare_sandbox, safe_unpack


def _zip(path: Path, entries: dict[str, tuple[bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, (data, mode) in entries.items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


SCRIPT = (b"#!/bin/sh\necho hi\n", stat.S_IFREG | 0o755)


class TestSafeUnpack:
    def test_keeps_unix_file_modes(self, tmp_path: Path) -> None:
        """An executable entry stays executable and a plain one stays plain."""
        archive = _zip(tmp_path / "a.zip", {"extension/extensionA.sh": SCRIPT,
                                            "extension/data.txt": (b"x", stat.S_IFREG | 0o640)})
        dest = tmp_path / "out"
        dest.mkdir()
        safe_unpack(archive, dest)
        assert stat.S_IMODE((dest / "extension/extensionA.sh").stat().st_mode) == 0o755
        assert stat.S_IMODE((dest / "extension/data.txt").stat().st_mode) == 0o640

    @pytest.mark.parametrize("name", ["../evil.sh", "extension/../../evil.sh", "/etc/evil.sh", "C:/evil.sh",
                                      "extension\\..\\..\\evil.sh"])
    def test_refuses_entries_escaping_the_target(self, tmp_path: Path, name: str) -> None:
        """A `..`, absolute or backslashed entry name is refused before anything is written."""
        archive = _zip(tmp_path / "a.zip", {"extension/extensionA.sh": SCRIPT, name: (b"x", 0o100644)})
        dest = tmp_path / "deep" / "out"
        dest.mkdir(parents=True)
        with pytest.raises(ConfigError):
            safe_unpack(archive, dest)
        assert list(dest.iterdir()) == []
        assert not (tmp_path / "evil.sh").exists() and not (tmp_path / "deep" / "evil.sh").exists()

    def test_refuses_symlinks(self, tmp_path: Path) -> None:
        """An entry whose mode says symbolic link is refused, naming the entry."""
        archive = _zip(tmp_path / "a.zip", {"extension/extensionA.sh": SCRIPT,
                                            "extension/link": (b"/etc/passwd", stat.S_IFLNK | 0o777)})
        with pytest.raises(ConfigError, match=r"extension/link.*symbolic link"):
            safe_unpack(archive, tmp_path)

    def test_refuses_what_is_not_a_zip(self, tmp_path: Path) -> None:
        """A file that is not a zip gives a clear configuration error."""
        bogus = tmp_path / "x.zip"
        bogus.write_text("not a zip")
        with pytest.raises(ConfigError, match="not a readable zip"):
            safe_unpack(bogus, tmp_path)


class TestScripts:
    def test_finds_extension_scripts_only(self, tmp_path: Path) -> None:
        """Only extension/extension*.sh counts, sorted by name."""
        folder = tmp_path / "extension"
        folder.mkdir()
        for name in ("extensionB.sh", "extensionA.sh", "helper.sh", "extensionC.py", "test.py"):
            (folder / name).write_text("")
        assert [p.name for p in find_scripts(tmp_path)] == ["extensionA.sh", "extensionB.sh"]

    def test_missing_folder_is_a_usage_error(self, tmp_path: Path) -> None:
        """A target without extension/ is refused with the reason."""
        with pytest.raises(ConfigError, match="no extension/ folder"):
            find_scripts(tmp_path)

    def test_folder_without_script_is_a_usage_error(self, tmp_path: Path) -> None:
        """An extension/ folder without an extension*.sh is refused."""
        (tmp_path / "extension").mkdir()
        (tmp_path / "extension" / "run.sh").write_text("")
        with pytest.raises(ConfigError, match=r"no extension\*\.sh"):
            find_scripts(tmp_path)


class TestPrepare:
    def test_zip_lands_in_a_fresh_code_root_that_cleanup_removes(self, tmp_path: Path) -> None:
        """A zip is unpacked under function/code, the working directory is function/, cleanup removes all."""
        archive = _zip(tmp_path / "a.zip", {"extension/extensionA.sh": SCRIPT})
        sandbox = prepare_sandbox(archive)
        try:
            assert sandbox.code_root == sandbox.cwd / "code"
            assert [p.name for p in sandbox.scripts] == ["extensionA.sh"]
            assert sandbox.scripts[0].parent == sandbox.code_root / "extension"
        finally:
            sandbox.cleanup()
        assert not sandbox.root.exists()

    def test_errors_name_the_users_zip_not_the_temporary_tree(self, tmp_path: Path) -> None:
        """A zip without a launcher, or with an unsafe entry, is refused naming the zip the user gave."""
        archive = _zip(tmp_path / "mine.zip", {"extension/run.sh": SCRIPT})
        with pytest.raises(ConfigError) as missing:
            prepare_sandbox(archive)
        assert str(missing.value).startswith(f"{archive}: extension/ holds no extension*.sh")
        assert "fgext-emulate-" not in str(missing.value)
        unsafe = _zip(tmp_path / "unsafe.zip", {"extension/extensionA.sh": SCRIPT, "../x": (b"", 0o100644)})
        with pytest.raises(ConfigError, match=rf"^{unsafe}: zip entry '\.\./x'"):
            prepare_sandbox(unsafe)

    def test_directory_is_used_in_place(self, tmp_path: Path) -> None:
        """A directory target is the code root itself and survives cleanup."""
        (tmp_path / "extension").mkdir()
        (tmp_path / "extension" / "extensionA.sh").write_text("")
        sandbox = prepare_sandbox(tmp_path)
        sandbox.cleanup()
        assert sandbox.code_root == tmp_path.resolve()
        assert (tmp_path / "extension" / "extensionA.sh").exists()

    def test_refused_zip_leaves_no_temporary_tree(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """When unpacking fails the half-made sandbox is removed."""
        import tempfile

        temp = tmp_path / "temp"
        temp.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(temp))
        archive = _zip(tmp_path / "a.zip", {"extension/extensionA.sh": SCRIPT, "../x": (b"", 0o100644)})
        with pytest.raises(ConfigError):
            prepare_sandbox(archive)
        assert list(temp.iterdir()) == []
        good = prepare_sandbox(_zip(tmp_path / "b.zip", {"extension/extensionA.sh": SCRIPT}))
        good.cleanup()
        assert good.root.parent == temp  # sandboxes are made where the check looks
