"""The ``fgext`` command line: one sub-command per user task, each imported only when chosen.

Exit codes (documented in the README):
    0  success
    1  the command ran and found problems (``fgext check`` named problems, a build failed)
    2  usage or configuration error: a flag, an environment variable or a config file is wrong
    3  the platform API refused the agent or could not be reached in time
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Dict, List, Optional

from fgext._errors import EXIT_CONFIG, FgextError

__all__ = ["main"]

# name -> (help, "module:function" that adds arguments, "module:function" that runs)
_COMMANDS: Dict[str, tuple[str, str, str]] = {
    "run": ("run the agent (what the launcher script does inside the sandbox)",
            "fgext._bootstrap:add_arguments", "fgext._bootstrap:run_command"),
    "emulate": ("run extensions against a local FunctionGraph platform and a real function",
                "fgext.emulator._cli:add_arguments", "fgext.emulator._cli:run_command"),
    "package": ("build the dependency zip for a FunctionGraph Python runtime",
                "fgext.packager._cli:add_package_arguments", "fgext.packager._cli:package_command"),
    "check": ("validate any extension zip against the platform's rules and limits",
              "fgext.packager._cli:add_check_arguments", "fgext.packager._cli:check_command"),
    "publish": ("create a dependency version from a zip and attach it to functions (needs fgext[publish])",
                "fgext.publish._cli:add_arguments", "fgext.publish._cli:run_command"),
}


def _load(target: str) -> Callable[..., object]:
    import importlib

    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]


def _parser(argv: List[str]) -> argparse.ArgumentParser:
    from fgext import __version__

    parser = argparse.ArgumentParser(
        prog="fgext",
        description="Extension and telemetry agent runtime for Huawei Cloud FunctionGraph.",
        epilog="Exit codes: 0 ok, 1 problems found, 2 usage or configuration error, "
               "3 platform API error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"fgext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (help_text, add_arguments, run) in _COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_run=run)
        if name == chosen:
            # Only the chosen command's module is imported: `fgext package` never loads aiohttp.
            _load(add_arguments)(command)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; return the exit code instead of raising for a user's mistake."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(args_list)
    args = parser.parse_args(args_list)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    try:
        result = _load(args._run)(args)
    except FgextError as error:
        print(f"fgext {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `fgext package | head`: the reader left; that is not an error of ours to report.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return int(result) if isinstance(result, int) else 0
