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
        with pytest.raises(PluginError, match="'retries'.*must be int"):
            plugin_config(Configurable(), {"plugins": {"conf": {"retries": "many"}}}, {})

    def test_section_must_be_object(self) -> None:
        """plugins.<name> in the config file must be an object."""
        with pytest.raises(PluginError, match="must be an object"):
            plugin_config(Configurable(), {"plugins": {"conf": [1]}}, {})
