"""Plugins found by name, by entry point, by path; their configuration validated."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar, Dict, Iterator

import pytest

from fgext._discovery import available_plugins, load_plugin, load_plugins, plugin_config
from fgext._errors import PluginError
from fgext._plugin import Plugin
from fgext.plugins.jsonl import JsonlPlugin


class Configurable(Plugin):
    name: ClassVar[str] = "conf"
    config_schema: ClassVar[Dict[str, type]] = {"threshold": float, "retries": int, "enabled": bool, "tags": list,
                                                "path": str}


@pytest.fixture
def local_module(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "my_local_plugin.py").write_text(
        "from fgext import Plugin\n"
        "class Mine(Plugin):\n    name = 'mine'\n"
        "instance = Mine()\n"
        "not_a_plugin = 42\n"
    )
    sys.path.insert(0, str(tmp_path))
    yield "my_local_plugin"
    sys.path.remove(str(tmp_path))
    sys.modules.pop("my_local_plugin", None)


class TestLoading:
    def test_builtin_by_name(self) -> None:
        """A built-in is loaded by its name even from a source checkout without metadata."""
        assert isinstance(load_plugin("jsonl"), JsonlPlugin)
        assert "jsonl" in available_plugins() and "otlp" in available_plugins()

    def test_local_path_class_and_instance(self, local_module: str) -> None:
        """module:attr loads a Plugin subclass (instantiated) or a ready instance."""
        assert load_plugin(f"{local_module}:Mine").name == "mine"
        assert load_plugin(f"{local_module}:instance").name == "mine"

    @pytest.mark.parametrize(("name", "message"), [
        ("nosuch", "unknown plugin 'nosuch'"), ("no_such_module_xyz:X", "cannot import"),
        ("fgext.plugins.jsonl:Nope", "no attribute"), ("fgext.plugins.jsonl:json", "not a fgext.Plugin"),
    ])
    def test_errors_name_the_plugin(self, name: str, message: str) -> None:
        """Every way a name can fail gives a PluginError that says which and why."""
        with pytest.raises(PluginError, match=message):
            load_plugin(name)

    def test_star_and_duplicates(self) -> None:
        """``*`` expands to every available plugin once; a repeated name loads once."""
        names = [type(p).__name__ for p in load_plugins(["jsonl", "jsonl"])]
        assert names == ["JsonlPlugin"]


class TestConfig:
    def test_file_then_environment(self) -> None:
        """File values are read, environment values override them, strings are converted to the schema type."""
        config = plugin_config(
            Configurable(),
            {"plugins": {"conf": {"threshold": 1, "retries": 2, "path": "/a"}}},
            {"FGEXT_CONF_RETRIES": "5", "FGEXT_CONF_ENABLED": "yes", "FGEXT_CONF_TAGS": "a, b"},
        )
        assert config == {"threshold": 1.0, "retries": 5, "path": "/a", "enabled": True, "tags": ["a", "b"]}

    def test_unknown_key(self) -> None:
        """A key the plugin does not declare is refused, naming plugin, key and source."""
        with pytest.raises(PluginError, match=r"'conf': unknown setting 'colour' \(from FGEXT_CONF_COLOUR\)"):
            plugin_config(Configurable(), {}, {"FGEXT_CONF_COLOUR": "red"})

    def test_wrong_type(self) -> None:
        """A value that does not convert to the declared type is refused with the key."""
        with pytest.raises(PluginError, match=r"'retries'.*must be int"):
            plugin_config(Configurable(), {"plugins": {"conf": {"retries": "many"}}}, {})

    def test_section_must_be_object(self) -> None:
        """plugins.<name> in the config file must be an object."""
        with pytest.raises(PluginError, match="must be an object"):
            plugin_config(Configurable(), {"plugins": {"conf": [1]}}, {})


def _wheel(directory: Path, dist: str, module_source: str, entry_points: str) -> Path:
    """A real, minimal wheel (pure Python, correct RECORD) holding one module and its entry points."""
    import base64
    import hashlib
    import zipfile

    info = f"{dist}-1.0.dist-info"
    files = {
        f"{dist}.py": module_source,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: fgext-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": entry_points,
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    path = directory / f"{dist}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


PLUGIN_SOURCE = (
    "import fgext\n"
    "from fgext._extension import Extension\n"
    "class Shout(fgext.Plugin):\n"
    "    name = 'shout'\n"
    "    role = 'processor'\n"
    "    config_schema = {'suffix': str}\n"
    "ext = Extension(name='twofold')\n"
    "@ext.on_event\n"
    "def event(e):\n    return e\n"
    "@ext.on_telemetry\n"
    "def telemetry(events):\n    pass\n"
)


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[Path]:
    """A distribution pip-installed into a temporary --target that is put on sys.path."""
    import importlib
    import subprocess

    wheel = _wheel(tmp_path, "fgext_tinyplug", PLUGIN_SOURCE,
                   "[fgext.plugins]\nshout = fgext_tinyplug:Shout\ntwofold = fgext_tinyplug:ext\n")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "--target", str(target), str(wheel)],
                   check=True, timeout=120, capture_output=True)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("fgext_tinyplug", None)


class TestEntryPoints:
    def test_installed_distribution_found_by_name(self, installed: Path) -> None:
        """A pip-installed distribution's fgext.plugins entry point is loaded by its name."""
        assert (installed / "fgext_tinyplug-1.0.dist-info" / "entry_points.txt").exists()
        assert available_plugins()["shout"] == "fgext_tinyplug:Shout"
        plugin = load_plugin("shout")
        assert type(plugin).__name__ == "Shout" and plugin.role == "processor"

    def test_extension_entry_point_yields_processor_and_sink(self, installed: Path) -> None:
        """An Extension named by entry point stands for its processor and its sink."""
        plugins = load_plugins(["twofold"])
        assert [(p.name, p.role) for p in plugins] == [("twofold", "processor"), ("twofold", "sink")]
        with pytest.raises(PluginError, match="stands for 2 plugins"):
            load_plugin("twofold")

    def test_star_includes_builtins_and_installed(self, installed: Path) -> None:
        """``*`` loads every built-in and every installed plugin."""
        available = available_plugins()
        assert {"jsonl", "redact", "filter", "webhook", "shout", "twofold"} <= set(available)
        names = [p.name for p in load_plugins([n for n in sorted(available) if n != "otlp"])]
        assert {"jsonl", "redact", "filter", "webhook", "shout", "twofold"} <= set(names)

    def test_installed_config_validated_like_builtins(self, installed: Path) -> None:
        """An installed plugin's settings go through the same schema check, with its name in the error."""
        plugin = load_plugin("shout")
        assert plugin_config(plugin, {}, {"FGEXT_SHOUT_SUFFIX": "!"}) == {"suffix": "!"}
        with pytest.raises(PluginError, match="'shout': unknown setting 'volume'"):
            plugin_config(plugin, {"plugins": {"shout": {"volume": 11}}}, {})

    def test_scan_agrees_with_importlib_metadata(self, installed: Path) -> None:
        """The agent's own read of entry_points.txt finds what importlib.metadata finds, installed plugin included."""
        from fgext._discovery import _entry_points, _metadata_entry_points

        assert _entry_points() == _metadata_entry_points()
        assert _entry_points()["twofold"] == "fgext_tinyplug:ext"


def _dist_info(folder: Path, dirname: str, entry_points: bytes) -> None:
    (folder / dirname).mkdir(parents=True)
    (folder / dirname / "entry_points.txt").write_bytes(entry_points)


@pytest.fixture
def on_path(tmp_path: Path) -> Iterator[list[str]]:
    """Folders put at the front of sys.path by a test, taken off again afterwards."""
    added: list[str] = []
    yield added
    for entry in added:
        sys.path.remove(entry)


class TestEntryPointScan:
    def test_first_distribution_on_path_wins(self, tmp_path: Path, on_path: list[str]) -> None:
        """Of two installs of one distribution the first on sys.path is read; names keep their first value."""
        from fgext._discovery import _entry_points

        first, second = tmp_path / "first", tmp_path / "second"
        _dist_info(first, "fgext_dup-2.0.dist-info", b"[fgext.plugins]\nnew = dup_new:P\n")
        _dist_info(second, "Fgext.Dup-1.0.dist-info", b"[fgext.plugins]\nold = dup_old:P\n")
        _dist_info(second, "other-1.0.dist-info", b"[fgext.plugins]\nnew = other:P\nkept = other:Q\n")
        sys.path[:0] = [str(first), str(second)]
        on_path.extend([str(first), str(second)])
        found = _entry_points()
        assert found["new"] == "dup_new:P" and found["kept"] == "other:Q"
        assert "old" not in found

    def test_only_the_plugin_group_and_no_comments(self, tmp_path: Path, on_path: list[str]) -> None:
        """Other groups, comments and lines without '=' are not entry points; values lose their padding."""
        from fgext._discovery import _entry_points

        _dist_info(tmp_path, "mixed-1.0.egg-info",
                   b"[console_scripts]\nnotme = mixed:main\n\n# a comment\n[ fgext.plugins ]\n"
                   b"; another = comment:X\nspaced   =   mixed.mod:Plug  \nnot an entry\n[other]\nlate = x:y\n")
        sys.path.insert(0, str(tmp_path))
        on_path.append(str(tmp_path))
        found = _entry_points()
        assert found["spaced"] == "mixed.mod:Plug"
        assert not {"notme", "another", "late", "not an entry"} & set(found)

    def test_unreadable_entry_points_skipped(self, tmp_path: Path, on_path: list[str]) -> None:
        """A distribution whose entry_points.txt is not UTF-8 is skipped; the others are still found."""
        from fgext._discovery import _entry_points

        _dist_info(tmp_path, "broken-1.0.dist-info", b"[fgext.plugins]\nbad = \xff\xfe:X\n")
        _dist_info(tmp_path, "good-1.0.dist-info", b"[fgext.plugins]\ngood = good:P\n")
        sys.path.insert(0, str(tmp_path))
        on_path.append(str(tmp_path))
        found = _entry_points()
        assert found["good"] == "good:P" and "bad" not in found

    def test_zip_on_path_read_through_importlib_metadata(self, tmp_path: Path, on_path: list[str]) -> None:
        """A zip on sys.path is not a folder: its distributions' entry points come from importlib.metadata."""
        import zipfile

        from fgext._discovery import _entry_points

        archive = tmp_path / "plugins.zip"
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr("zipped_plug-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped-plug\n"
                            "Version: 1.0\n")
            zipped.writestr("zipped_plug-1.0.dist-info/entry_points.txt", "[fgext.plugins]\nzipped = zp:P\n")
        sys.path.insert(0, str(archive))
        on_path.append(str(archive))
        assert _entry_points()["zipped"] == "zp:P"
        assert _entry_points()["jsonl"] == "fgext.plugins.jsonl:JsonlPlugin"

    def test_agent_plugins_load_without_importlib_metadata(self) -> None:
        """Loading the agent's plugins by name leaves importlib.metadata unimported (it stays ~0.5 MB of RSS)."""
        import subprocess

        code = ("import sys\nfrom fgext._discovery import load_plugins\n"
                "names = [p.name for p in load_plugins(['otlp', 'jsonl', 'redact'])]\n"
                "print(names, 'importlib.metadata' in sys.modules)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
        assert done.stdout.split() == ["['otlp',", "'jsonl',", "'redact']", "False"]


class TestBuiltins:
    @pytest.mark.parametrize("name", ["jsonl", "redact", "filter", "webhook"])
    def test_builtin_loads_by_name_with_its_own_name(self, name: str) -> None:
        """Every built-in in the table loads by name and calls itself by that name."""
        assert load_plugin(name).name == name
