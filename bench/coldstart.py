"""Cold start: exec of the launcher -> register received, -> subscribe received, -> first batch answered.

Floors taken in the same run: ``python -c pass`` and ``python -c "import aiohttp.web"``. Medians of
``--runs`` launches. Talks only to 127.0.0.1; every agent started is killed by PID.

    python bench/coldstart.py [--runs 15] [--python PATH] [--json OUT]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.platform import RecordingPlatform  # noqa: E402

LAUNCHER = ROOT / "extension" / "extensionFgext.sh"
BATCH = json.dumps([{"name": "platform.start", "startTime": "2023-02-01T00:03:50.000Z",
                     "traceId": "69be64a7-0233-11e8-82e4-e5d37911193e"}]).encode()


def floor(python: str, code: str, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([python, "-c", code], check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def one_launch(python: str, platform: RecordingPlatform, plugins: str) -> Dict[str, float]:
    before = len(platform.requests)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FGEXT_", "OTEL_"))}
    env.update({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PYTHON": python, "FGEXT_PLUGINS": plugins,
                "FGEXT_PORT": "8090", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        proc = subprocess.Popen([str(LAUNCHER)], env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            seen = platform.wait_for(lambda r: len(r) >= before + 2, timeout=30)
            register, subscribe = seen[before], seen[before + 1]
            deadline = time.monotonic() + 30
            while True:
                try:
                    request = urllib.request.Request("http://127.0.0.1:8090/", data=BATCH, method="POST")
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        answer.read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.002)
            answered = time.monotonic()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    return {"register_ms": (register.at - start) * 1000, "subscribe_ms": (subscribe.at - start) * 1000,
            "first_batch_ms": (answered - start) * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--plugins", default="jsonl", help="FGEXT_PLUGINS for the agent (default jsonl)")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()

    results: Dict[str, object] = {"python": subprocess.run(
        [args.python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True,
        check=True).stdout.strip(), "runs": args.runs, "plugins": args.plugins}
    results["floor_python_pass_ms"] = floor(args.python, "pass", args.runs)
    results["floor_import_aiohttp_web_ms"] = floor(args.python, "import aiohttp.web", args.runs)
    platform = RecordingPlatform().start()
    # The same machine-wide lock the tests hold: ports 8081-8090 are fixed by the platform.
    with open(os.environ.get("FGEXT_TEST_LOCK", "/tmp/fgext-test-ports.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            samples: List[Dict[str, float]] = [
                one_launch(args.python, platform, args.plugins) for _ in range(args.runs)]
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            platform.stop()
    for key in ("register_ms", "subscribe_ms", "first_batch_ms"):
        results[key] = statistics.median(s[key] for s in samples)
    results["first_batch_over_aiohttp_floor"] = (
        float(results["first_batch_ms"]) / float(results["floor_import_aiohttp_web_ms"]))  # type: ignore[arg-type]
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:.1f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
