"""Finding, loading and configuring plugins by name.

``FGEXT_PLUGINS`` is a comma-separated list of names: an entry point name in the ``fgext.plugins``
group (the built-ins register there too), ``module:attr`` for a local plugin, or ``*`` for every
installed one. A source checkout has no installed metadata, so the built-ins are also known by the
table below; an installed entry point of the same name wins.

Configuration of plugin ``name``: the config file's ``plugins.<name>`` object, overridden by
``FGEXT_<NAME>_<KEY>`` environment variables, checked against the plugin's ``config_schema``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from fgext._errors import PluginError
from fgext._plugin import Plugin

__all__ = ["BUILTINS", "ENTRY_POINT_GROUP", "available_plugins", "load_plugin", "load_plugins", "plugin_config"]

ENTRY_POINT_GROUP = "fgext.plugins"
BUILTINS: Dict[str, str] = {
    "otlp": "fgext.otlp:OtlpPlugin",
    "jsonl": "fgext.plugins.jsonl:JsonlPlugin",
    "redact": "fgext.plugins.redact:RedactPlugin",
    "filter": "fgext.plugins.filter:FilterPlugin",
    "webhook": "fgext.plugins.webhook:WebhookPlugin",
}


def _metadata_entry_points() -> Dict[str, str]:
    from importlib import metadata

    found: Dict[str, str] = {}
    try:
        eps: Any = metadata.entry_points()
        group = eps.select(group=ENTRY_POINT_GROUP) if hasattr(eps, "select") else eps.get(ENTRY_POINT_GROUP, [])
        for ep in group:
            found.setdefault(ep.name, ep.value)
    except Exception:  # a broken distribution must not stop the agent
        pass
    return found


def _group_lines(text: str) -> List[Tuple[str, str]]:
    """The ``name = value`` lines of the ``fgext.plugins`` section of an ``entry_points.txt``."""
    pairs: List[Tuple[str, str]] = []
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line[0] == "[" and line[-1] == "]":
            inside = line[1:-1].strip() == ENTRY_POINT_GROUP
        elif inside:
            name, sep, value = line.partition("=")
            if sep and name.strip():
                pairs.append((name.strip(), value.strip()))
    return pairs


def _entry_points() -> Dict[str, str]:
    """The ``fgext.plugins`` entry points of the distributions on ``sys.path``; the first found wins.

    Read from each folder's ``*.dist-info``/``*.egg-info`` ``entry_points.txt`` directly rather than through
    ``importlib.metadata``, whose import (email, csv, zipfile, configparser) stayed ~0.5 MB of the agent's
    resident memory for the life of the process. A ``sys.path`` entry that is not a
    folder (a zip or an egg) is left to ``importlib.metadata``, which reads those too.
    """
    found: Dict[str, str] = {}
    seen: set[str] = set()  # a distribution shadowed by an earlier one of the same name is not read
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as listing:
                infos = sorted(item.name for item in listing if item.name.endswith((".dist-info", ".egg-info")))
        except NotADirectoryError:
            return {**found, **{k: v for k, v in _metadata_entry_points().items() if k not in found}}
        except OSError:  # a missing folder on sys.path is common and harmless
            continue
        for info in infos:
            dist = info.rsplit(".", 1)[0].partition("-")[0].lower().replace("-", "_").replace(".", "_")
            if dist in seen:
                continue
            seen.add(dist)
            try:
                with open(os.path.join(entry or ".", info, "entry_points.txt"), encoding="utf-8") as file:
                    text = file.read()
            except (OSError, UnicodeDecodeError):  # none, or unreadable: a broken distribution must not stop the agent
                continue
            for name, value in _group_lines(text):
                found.setdefault(name, value)
    return found


def available_plugins() -> Dict[str, str]:
    """Every plugin name this agent can load, with the ``module:attr`` it loads."""
    return {**BUILTINS, **_entry_points()}


def _import(target: str, name: str) -> Any:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise PluginError(f"plugin {name!r}: {target!r} is not of the form module:attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise PluginError(f"plugin {name!r}: cannot import {module_name}: {type(error).__name__}: {error}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"plugin {name!r}: {module_name} has no attribute {attr!r}") from None
    return obj


def _instances(name: str) -> List[Plugin]:
    """The plugin instance(s) a name stands for: an Extension may hold a processor and a sink."""
    target = name if ":" in name else available_plugins().get(name)
    if target is None:
        known = ", ".join(sorted(available_plugins())) or "none"
        raise PluginError(f"unknown plugin {name!r} in FGEXT_PLUGINS (installed: {known})")
    obj = _import(target, name)
    if inspect.isclass(obj) and issubclass(obj, Plugin):
        try:
            return [obj()]
        except Exception as error:
            raise PluginError(f"plugin {name!r}: {type(error).__name__}: {error}") from None
    if isinstance(obj, Plugin):
        return [obj]
    # An object that offers plugins (fgext.Extension's decorator style does).
    as_plugins = getattr(obj, "as_plugins", None)
    if callable(as_plugins) and not inspect.isclass(obj):
        plugins = list(as_plugins())
        if plugins and all(isinstance(p, Plugin) for p in plugins):
            return plugins
    as_plugin = getattr(obj, "as_plugin", None)
    if callable(as_plugin) and not inspect.isclass(obj):
        plugin = as_plugin()
        if isinstance(plugin, Plugin):
            return [plugin]
    raise PluginError(f"plugin {name!r}: {target} is not a fgext.Plugin subclass or instance, nor a fgext.Extension")


def load_plugin(name: str) -> Plugin:
    """Instantiate one plugin by entry-point name or ``module:attr``."""
    plugins = _instances(name)
    if len(plugins) != 1:
        raise PluginError(f"plugin {name!r} stands for {len(plugins)} plugins; use load_plugins")
    return plugins[0]


def load_plugins(names: Sequence[str]) -> List[Plugin]:
    """Load every named plugin, ``*`` meaning all installed ones, each once."""
    expanded: List[str] = []
    for name in names:
        for item in (sorted(available_plugins()) if name == "*" else [name]):
            if item not in expanded:
                expanded.append(item)
    return [plugin for name in expanded for plugin in _instances(name)]


def _convert(plugin: str, key: str, value: Any, kind: type, source: str) -> Any:
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(text)
            if kind in (int, float):
                return kind(text)
            if kind is list:
                return [part.strip() for part in text.split(",") if part.strip()]
        except ValueError:
            pass
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise PluginError(
        f"plugin {plugin!r}: setting {key!r} from {source} must be {kind.__name__}, got {value!r}"
    )


def plugin_config(plugin: Plugin, file_config: Mapping[str, Any], environ: Mapping[str, str]) -> Dict[str, Any]:
    """Merge and validate one plugin's settings; raise :class:`PluginError` naming plugin and key."""
    name = plugin.name or type(plugin).__name__
    schema = dict(plugin.config_schema)
    sources: List[Tuple[str, str, Any]] = []
    section = (file_config.get("plugins") or {}).get(name) if isinstance(file_config.get("plugins"), dict) else None
    if section is not None and not isinstance(section, dict):
        raise PluginError(f"plugin {name!r}: config file section plugins.{name} must be an object")
    for key, value in (section or {}).items():
        sources.append((str(key), f"config file plugins.{name}", value))
    prefix = f"FGEXT_{name.upper().replace('-', '_')}_"
    for env_key, value in environ.items():
        if env_key.startswith(prefix):
            sources.append((env_key[len(prefix):].lower(), env_key, value))
    config: Dict[str, Any] = {}
    for key, source, value in sources:
        if key not in schema:
            allowed = ", ".join(sorted(schema)) or "none"
            raise PluginError(f"plugin {name!r}: unknown setting {key!r} (from {source}); known settings: {allowed}")
        config[key] = _convert(name, key, value, schema[key], source)
    return config
