"""The ``fgext package`` and ``fgext check`` sub-commands (wired up in ``fgext._cli``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fgext._errors import EXIT_OK, EXIT_PROBLEMS, ConfigError

__all__ = ["add_check_arguments", "add_package_arguments", "check_command", "package_command"]


def add_package_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``fgext package``."""
    from fgext.packager._runtimes import ARCHITECTURES

    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.zip",
                        help="the zip to write (replaced if it exists)")
    parser.add_argument("--runtime", default="Python3.9", metavar="RUNTIME",
                        help="the function's runtime: Python3.9 (default), Python3.10 or Python3.12")
    parser.add_argument("--arch", default="x86_64", choices=sorted(ARCHITECTURES),
                        help="the function's architecture (default x86_64)")
    parser.add_argument("--name", default="extensionFgext.sh", metavar="extension*.sh",
                        help="file name of the launcher; the platform identifies the extension by it")
    parser.add_argument("--python", metavar="PATH",
                        help="an interpreter of the target's Python version, to resolve with and compile "
                             "byte code (default: python3.X on PATH, pyenv, /usr/bin)")
    parser.add_argument("--plugin", action="append", default=[], type=Path, metavar="PATH",
                        help="a plugin module (.py) or package folder for extension/fgext-plugins "
                             "(repeatable)")
    parser.add_argument("--requirement", "-r", action="append", default=[], metavar="REQ",
                        help="an extra distribution for fgext-lib: a requirement ('fgext-foo>=1'), a "
                             "wheel file, or a file with one requirement per line (repeatable)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="a JSON config file, shipped as extension/fgext.json")
    parser.add_argument("--constraint", "-c", action="append", default=[], type=Path, metavar="FILE",
                        help="extra pip constraints file (repeatable)")
    parser.add_argument("--with-grpc", action="store_true",
                        help="include grpcio, for OTLP/gRPC export (about 7 MB more, compressed)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="ship sources only, without byte code")
    parser.add_argument("--no-strip", dest="strip", action="store_false",
                        help="keep debug sections in shared libraries (default: strip --strip-debug)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")


def package_command(args: argparse.Namespace) -> int:
    """Build the zip and print the report; 0 on success (warnings included)."""
    require_package_extra()
    from fgext.packager._build import BuildOptions, build
    from fgext.packager._report import render_build

    def progress(line: str) -> None:
        print(f"fgext package: {line}", file=sys.stderr, flush=True)

    result = build(BuildOptions(
        output=args.output, runtime=args.runtime, arch=args.arch, name=args.name, python=args.python,
        plugins=args.plugin, requirements=args.requirement, config=args.config, with_grpc=args.with_grpc,
        constraints=args.constraint, compile=args.compile, strip=args.strip, log=None if args.quiet else progress))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=lambda o: o.__dict__))
    else:
        print(render_build(result))
    return EXIT_OK


def require_package_extra() -> None:
    """A missing ``fgext[package]`` extra is an installation the user fixes: exit 2, with the command."""
    import importlib.util

    if importlib.util.find_spec("packaging") is None:
        raise ConfigError("fgext package needs the 'package' extra (the 'packaging' library), not installed "
                          f"here; install it with: {sys.executable} -m pip install 'fgext[package]'")


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``fgext check``."""
    parser.add_argument("zip", type=Path, metavar="ZIP", help="the dependency zip to validate")
    parser.add_argument("--dependency-name", metavar="NAME",
                        help="the dependency name you will give it (default: checked loosely from the file "
                             "name)")
    parser.add_argument("--runtime", metavar="RUNTIME",
                        help="the function's runtime: byte code, native extensions and wheels built for "
                             "another Python are problems")
    parser.add_argument("--arch", choices=["x86_64", "aarch64"],
                        help="the function's architecture, to flag native code built for another machine")
    parser.add_argument("--strict", action="store_true", help="fail on warnings too")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON on stdout")


def check_command(args: argparse.Namespace) -> int:
    """Validate the zip; 1 when it has problems (or warnings with --strict), else 0."""
    from fgext.packager._check import check_zip
    from fgext.packager._report import render_check
    from fgext.packager._runtimes import get_runtime

    tag = f"cpython-{get_runtime(args.runtime).nodot}" if args.runtime else None
    findings = check_zip(args.zip, dependency_name=args.dependency_name, runtime_tag=tag, arch=args.arch)
    failing = [f for f in findings if f.severity == "error" or args.strict]
    if args.json:
        print(json.dumps({"zip": str(args.zip), "ok": not failing,
                          "findings": [finding.to_dict() for finding in findings]}, indent=2))
    else:
        print(render_check(str(args.zip), findings, strict=args.strict))
    return EXIT_PROBLEMS if failing else EXIT_OK
