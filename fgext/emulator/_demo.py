"""``fgext emulate --demo``: the fgext agent of this installation, a sample function, and its traces.

The agent runs as any extension would - through the real launcher, ``extension/extensionFgext.sh`` -
against the emulated platform; it exports OTLP/HTTP protobuf to a receiver in this process, and the
demo prints each trace as a waterfall, then the metrics. In a checkout the launcher beside the
``fgext`` package runs it; an installed fgext (a wheel) lays the launcher it ships out in a temporary
directory and the agent imports fgext from this interpreter's site-packages. Nothing waits without a
bound: when no traces arrive the demo says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, List, Optional

import fgext
from fgext._errors import EXIT_OK, EXIT_PROBLEMS
from fgext.emulator._config import SAMPLE_FUNCTION, EmulatorConfig

__all__ = ["DEMO_EVENTS", "demo_root", "run_demo"]

DEMO_EVENTS: List[Any] = [
    {"user": "ada", "action": "login"},
    {"user": "grace", "action": "report"},
    {"user": "linus", "action": "delete", "fail": True},
    {"user": "ada", "action": "logout"},
]
# Waited after the agent has exited (so whatever it exported is in flight or here): short is enough.
TRACE_WAIT_S = 2.0


@contextlib.contextmanager
def demo_root() -> Iterator[Path]:
    """A tree holding ``extension/extensionFgext.sh``: the checkout's, else the installed launcher's copy."""
    root = Path(fgext.__file__).resolve().parent.parent
    if (root / "extension" / "extensionFgext.sh").is_file() and (root / "pyproject.toml").is_file():
        yield root
        return
    from fgext.packager._assets import launcher

    with tempfile.TemporaryDirectory(prefix="fgext-demo-") as tmp:
        extension = Path(tmp) / "extension"
        extension.mkdir()
        script = extension / "extensionFgext.sh"
        shutil.copyfile(launcher(), script)
        script.chmod(0o755)  # a wheel's data files need not keep their mode
        yield Path(tmp)


def otlp_plugin_available() -> bool:
    """Whether the agent in this tree can load its ``otlp`` plugin (it is looked up as the agent does)."""
    from fgext._discovery import available_plugins

    target = available_plugins().get("otlp", "")
    module = target.partition(":")[0]
    try:
        return bool(module) and importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package that does not exist
        return False


def _sdk_available() -> bool:
    """Whether the sample function (run by this interpreter) can export its own spans."""
    try:
        return importlib.util.find_spec("opentelemetry.sdk.trace") is not None
    except ImportError:  # opentelemetry itself is missing
        return False


def run_demo(verbose: bool = False, as_json: bool = False, wait_s: float = TRACE_WAIT_S) -> int:
    return asyncio.run(_demo(verbose, as_json, wait_s))


def _say(text: str, as_json: bool) -> None:
    print(text, file=sys.stderr if as_json else sys.stdout, flush=True)


async def _demo(verbose: bool, as_json: bool, wait_s: float) -> int:
    from fgext.emulator._cli import stop_on_sigterm

    stop_on_sigterm()
    with demo_root() as root:
        return await _demo_in(root, verbose, as_json, wait_s)


async def _demo_in(root: Path, verbose: bool, as_json: bool, wait_s: float) -> int:
    from fgext.emulator._emulator import Emulator
    from fgext.emulator._extensions import ExtensionError
    from fgext.emulator._otlp import OtlpReceiver
    from fgext.emulator._render import render_summary
    from fgext.emulator._waterfall import render_metrics, render_traces

    if importlib.util.find_spec("fgext._bootstrap") is None:
        _say("the fgext agent runtime (fgext/_bootstrap.py) is not in this source tree: nothing to demo yet",
             as_json)
        return EXIT_PROBLEMS
    receiver = OtlpReceiver()
    endpoint = await receiver.start()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
           "OTEL_SERVICE_NAME": "fgext-demo", "FGEXT_PYTHON": sys.executable}
    if not otlp_plugin_available():
        # Without it the agent would refuse to start; run it with the jsonl sink so the rest still shows.
        env["FGEXT_PLUGINS"] = "jsonl"
        _say("note: this tree has no OTLP plugin (fgext.otlp) yet; the agent runs with the jsonl plugin "
             "and exports no traces", as_json)
    if not _sdk_available():
        _say("note: the OpenTelemetry SDK is not installed: the sample function runs unwrapped and its own "
             "spans (handler, digest, respond) are not exported; pip install 'fgext[function]' to see them", as_json)
    config = EmulatorConfig(target=root, function=SAMPLE_FUNCTION, function_name="fgext-demo",
                            register_timeout_s=20.0, env=env)
    from fgext.emulator._cli import echo_output

    emulator = Emulator(config, on_output=echo_output if verbose else None)
    _say(f"fgext demo: agent {root / 'extension' / 'extensionFgext.sh'}, OTLP receiver {endpoint}", as_json)
    try:
        try:
            await emulator.start()
        except ExtensionError as failure:
            _say(f"the agent did not start: {failure}", as_json)
            return EXIT_PROBLEMS
        try:
            await emulator.run(len(DEMO_EVENTS), events=DEMO_EVENTS)
        finally:
            # Stopping sends SIGTERM: the agent's documented end of life, when it flushes its exports.
            report = await emulator.stop()
        expected = len(report.invocations)
        await receiver.wait_for(expected, wait_s)
        # Logs and metrics may trail the spans by one export; give them a moment, bounded.
        await asyncio.sleep(0.2)
    finally:
        await receiver.stop()
    order: Optional[List[str]] = receiver.trace_ids()
    if as_json:
        from dataclasses import asdict

        print(json.dumps({"report": report.as_dict(), "spans": [asdict(s) for s in receiver.spans],
                          "logs": [asdict(log) for log in receiver.logs],
                          "metrics": [asdict(m) for m in receiver.metrics]}, indent=2, default=str))
    else:
        print(render_summary(report))
        print()
        if receiver.spans:
            print(f"traces ({len(receiver.trace_ids())}):")
            print(render_traces(receiver.spans, receiver.logs, order=order))
        else:
            counts = receiver.requests
            print(f"no traces received within {wait_s:g} s - is the OTLP plugin enabled? "
                  f"(the receiver got {counts['traces']} trace, {counts['logs']} log and "
                  f"{counts['metrics']} metric requests)")
        if receiver.metrics:
            print("\nmetrics:")
            print(render_metrics(receiver.metrics))
        for error in receiver.errors:
            print(f"receiver: {error}")
    return EXIT_OK if report.ok else EXIT_PROBLEMS
