"""Every error fgext raises on purpose, and the exit code each one means on the command line.

    FgextError                      base of everything below
    ├── ConfigError                 bad environment or flags              → exit 2
    ├── UrnError (also ValueError)  a function URN in no documented form
    ├── PlatformError               the platform refused or never answered → exit 3
    │   └── RegistrationError       /extension/register failed for good
    ├── PluginError                 a plugin could not be loaded or configured → exit 2
    └── PackageError                the packager could not build or check a zip → exit 1

``MalformedEvent`` (a ``ValueError``, not an ``FgextError``) is one object of a telemetry batch that is
not an event: the parser counts and skips it, and the agent answers the platform 400 for a body that is
not a JSON array; it never stops a command.

``DropEvent`` is not an error: a processor raises it to drop the event it was given, so it derives
from ``BaseException`` the way structlog's does, and no ``except Exception`` swallows it by accident.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CONFIG",
    "EXIT_OK",
    "EXIT_PLATFORM",
    "EXIT_PROBLEMS",
    "ConfigError",
    "DropEvent",
    "FgextError",
    "MalformedEvent",
    "PackageError",
    "PlatformError",
    "PluginError",
    "RegistrationError",
    "UrnError",
]

EXIT_OK = 0
EXIT_PROBLEMS = 1  # the command ran and found problems (``fgext check``, a failed build)
EXIT_CONFIG = 2  # the user's configuration or command line is wrong
EXIT_PLATFORM = 3  # the platform API refused the agent or could not be reached


class FgextError(Exception):
    """Base class of fgext's errors; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_PROBLEMS


class ConfigError(FgextError):
    """A setting from the environment, a flag or a config file is missing or invalid."""

    exit_code = EXIT_CONFIG


class UrnError(FgextError, ValueError):
    """A function URN matches none of the documented forms."""


class PlatformError(FgextError):
    """The platform's Extension or Telemetry API refused a request or could not be reached."""

    exit_code = EXIT_PLATFORM


class RegistrationError(PlatformError):
    """Registration did not succeed within the allowed time."""


class PluginError(FgextError):
    """A plugin could not be found, loaded or configured."""

    exit_code = EXIT_CONFIG


class PackageError(FgextError):
    """The packager could not build or validate a dependency zip."""


class MalformedEvent(ValueError):
    """One object of a telemetry batch could not be read as an event; the message says why."""


class DropEvent(BaseException):
    """Raised by a processor to drop the current event; the chain stops for that event."""
