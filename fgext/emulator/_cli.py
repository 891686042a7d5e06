"""``fgext emulate``: run extensions against a local FunctionGraph platform and a real function.

Exit codes: 0 every extension registered and stayed up and all telemetry was delivered; 1 an extension
failed to register, crashed, answered an invoke with an error, or telemetry was dropped; 2 usage error
(bad target, bad flags, unreadable event file). A handler that fails or times out is a result the
summary shows, not an emulator problem.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from fgext._errors import EXIT_OK, EXIT_PROBLEMS, ConfigError
from fgext.emulator._config import EmulatorConfig

if TYPE_CHECKING:
    from fgext.emulator._emulator import Emulator

__all__ = ["add_arguments", "config_from_args", "run_command"]

EXIT_INTERRUPTED = 130


def _whole(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} must be at least {minimum}")
        return value
    return parse


_positive_int = _whole(1)
_non_negative_int = _whole(0)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Exit codes: 0 all good; 1 an extension failed to register, crashed or answered "
                     "an invoke with an error, or telemetry was dropped; 2 usage error.")
    parser.add_argument("target", nargs="?", metavar="TARGET",
                        help="a dependency zip, or a directory holding an extension/ folder")
    parser.add_argument("--demo", action="store_true",
                        help="run the bundled fgext agent, a sample function and an OTLP receiver; "
                             "show the traces (takes no other arguments)")
    fn = parser.add_argument_group("function")
    fn.add_argument("--function", metavar="FILE.py:HANDLER",
                    help="the Python handler to run (default: a bundled sample)")
    fn.add_argument("--event", metavar="FILE.json", help="the event payload (default: {})")
    fn.add_argument("--invocations", "-n", type=_positive_int, default=3, metavar="N",
                    help="how many invocations (default 3)")
    fn.add_argument("--concurrency", "-c", type=_positive_int, default=1, metavar="C",
                    help="overlapping invocations on the one instance (default 1)")
    fn.add_argument("--memory", type=_positive_int, default=128, metavar="MB",
                    help="memory size (default 128)")
    fn.add_argument("--timeout", type=_seconds, default=3.0, metavar="S",
                    help="handler timeout in seconds (default 3)")
    fn.add_argument("--snapshot", action="store_true", help="cold starts are snapshot restores, not inits")
    fn.add_argument("--function-name", default="fgext-emulated", metavar="NAME")
    fn.add_argument("--function-version", default="latest", metavar="VERSION")
    fn.add_argument("--package", default="default", help="the function's package (app)")
    fn.add_argument("--region", default="cn-north-4")
    fn.add_argument("--project-id", default="0123456789abcdef0123456789abcdef", metavar="ID")
    fn.add_argument("--python", metavar="PATH", help="interpreter for the function (default: this one)")
    pf = parser.add_argument_group("platform")
    pf.add_argument("--port", type=int, default=0, help="platform API port (default: a free one)")
    pf.add_argument("--register-timeout", type=_seconds, default=10.0, metavar="S",
                    help="seconds every extension has to register (default 10)")
    pf.add_argument("--invoke-timeout", type=_seconds, default=2.0, metavar="S",
                    help="seconds to wait for each extension's answer to an invoke (default 2)")
    pf.add_argument("--batch-max-items", type=_positive_int, default=100, metavar="N",
                    help="most events per telemetry POST (default 100)")
    pf.add_argument("--batch-timeout-ms", type=_non_negative_int, default=100, metavar="MS",
                    help="longest an event waits for its batch (default 100)")
    pf.add_argument("--delivery-timeout", type=_seconds, default=1.0, metavar="S",
                    help="seconds the subscriber has to answer a telemetry POST (default 1)")
    pf.add_argument("--delivery-retries", type=_non_negative_int, default=3, metavar="N",
                    help="retries of a failed telemetry POST before its batch is dropped (default 3)")
    pf.add_argument("--spec-typos", action=argparse.BooleanOptionalAction, default=True,
                    help="spell names as the spec's examples do: platform.RuntimeDone, tracelId, "
                         "reportMetrics (default on)")
    pf.add_argument("--freeze", type=float, nargs="?", const=1.0, default=None, metavar="S",
                    help="SIGSTOP every extension for S seconds (default 1) between invocation waves")
    pf.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for extensions and the function (repeatable)")
    pf.add_argument("--inherit-env", action="store_true",
                    help="also pass this shell's environment (the sandbox would not)")
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="write the report as JSON to stdout")
    out.add_argument("--verbose", "-v", action="store_true",
                     help="echo every line extensions and the function print, to stderr")


def _env_pairs(pairs: List[str]) -> Dict[str, str]:
    env: Dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env must be KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def load_event(path: Optional[str]) -> Any:
    if path is None:
        return {}
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"--event {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise ConfigError(f"--event {path} is not valid JSON: {error}") from None


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Turn parsed flags into a validated configuration (``ConfigError`` for a user's mistake)."""
    if args.target is None:
        raise ConfigError("give a TARGET (a dependency zip or a directory with extension/), or --demo")
    options: Dict[str, Any] = {}
    if args.function:
        options["function"] = args.function
    if args.python:
        options["python"] = args.python
    return EmulatorConfig(
        target=args.target, function_name=args.function_name, function_version=args.function_version,
        package=args.package, region=args.region, project_id=args.project_id, memory_mb=args.memory,
        timeout_s=args.timeout, snapshot=args.snapshot, spec_typos=args.spec_typos,
        register_timeout_s=args.register_timeout, invoke_timeout_s=args.invoke_timeout,
        batch_max_items=args.batch_max_items, batch_timeout_ms=args.batch_timeout_ms,
        delivery_timeout_s=args.delivery_timeout, delivery_retries=args.delivery_retries,
        freeze_s=args.freeze, port=args.port, env=_env_pairs(args.env), inherit_env=args.inherit_env,
        **options,
    ).validated()


def run_command(args: argparse.Namespace) -> int:
    if args.demo:
        explicit = [flag for flag in ("target", "function", "event", "python") if getattr(args, flag)]
        if explicit:
            raise ConfigError(f"--demo takes no other arguments (got {', '.join(explicit)})")
        from fgext.emulator._demo import run_demo

        try:
            return run_demo(verbose=args.verbose, as_json=args.json)
        except asyncio.CancelledError:
            return EXIT_INTERRUPTED
    config = config_from_args(args)
    event = load_event(args.event)
    try:
        return asyncio.run(_emulate(config, event, args.invocations, args.concurrency, args.json, args.verbose))
    except asyncio.CancelledError:  # SIGTERM, after every process was stopped
        return EXIT_INTERRUPTED


def stop_on_sigterm(emulator: Optional[Emulator] = None) -> None:
    """Treat SIGTERM like Ctrl-C: cancel the run so that every extension process is stopped, not orphaned.

    The emulator is also flagged: its run loop stops at the next wave even if the cancellation itself
    was swallowed on the way (Python 3.9's ``asyncio.wait_for`` can lose one).
    """
    task = asyncio.current_task()
    if task is None:
        return

    def interrupt() -> None:
        if emulator is not None:
            emulator.interrupted = True
        task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, interrupt)


def echo_output(source: str, line: str) -> None:
    print(f"[{source}] {line}", file=sys.stderr, flush=True)


async def _emulate(config: EmulatorConfig, event: Any, invocations: int, concurrency: int, as_json: bool,
                   verbose: bool) -> int:
    from fgext.emulator._emulator import Emulator
    from fgext.emulator._render import Progress, render_summary

    emulator = Emulator(config, on_output=echo_output if verbose else None)
    progress = Progress(sys.stderr, invocations, telemetry=lambda: emulator.telemetry.stats)
    stop_on_sigterm(emulator)
    await emulator.start()
    interrupted = False
    try:
        progress.update()
        await emulator.run(invocations, concurrency, event=event, on_result=progress.update)
    except asyncio.CancelledError:
        # Interrupted (SIGTERM or Ctrl-C): still stop everything and show what ran.
        interrupted = True
    finally:
        progress.clear()
        report = await emulator.stop()
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        print(render_summary(report))
    if interrupted:
        print(f"interrupted after {len(report.invocations)} of {invocations} invocations", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_PROBLEMS
