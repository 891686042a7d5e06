"""The function's own process: imports a handler and calls it as ``handler(event, context)``.

Run as a script (``python _worker.py FILE HANDLER IN_FD OUT_FD``), never imported: it uses only the
standard library, so the user's code sees no fgext modules and the function's process stays small.
Requests arrive as JSON lines on ``IN_FD``, answers leave on ``OUT_FD``; stdout and stderr belong to the
function. Each invocation runs in its own thread so that several overlap on one instance.

After a handler returns, a sync marker is written to stdout and stderr *before* the answer, so the
emulator can tell that every line the invocation printed has been read before it emits ``RuntimeDone``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import resource
import sys
import threading
import time
import traceback
from typing import Any, Dict, Optional

SYNC = "\x1efgext-sync:"


def _maxrss_kb() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(usage // 1024) if sys.platform == "darwin" else int(usage)


class RuntimeLogger:
    """The logger ``context.getLogger()`` returns: timestamped lines with the request ID, on stdout."""

    _LEVELS = {"DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40}

    def __init__(self, request_id: str) -> None:
        self._request_id = request_id
        self._level = 20

    def setLevel(self, level: str) -> None:
        self._level = self._LEVELS.get(str(level).upper(), 20)

    def _log(self, level: str, message: Any, *args: Any) -> None:
        if self._LEVELS[level] < self._level:
            return
        text = str(message) % args if args else str(message)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        print(f"{stamp}Z {self._request_id} {level} {text}", flush=True)

    def debug(self, message: Any, *args: Any) -> None:
        self._log("DEBUG", message, *args)

    def info(self, message: Any, *args: Any) -> None:
        self._log("INFO", message, *args)

    def warn(self, message: Any, *args: Any) -> None:
        self._log("WARN", message, *args)

    warning = warn

    def error(self, message: Any, *args: Any) -> None:
        self._log("ERROR", message, *args)


class Context:
    """What FunctionGraph's Python runtime passes as ``context`` (the documented getters)."""

    def __init__(self, request: Dict[str, Any], started: float) -> None:
        self._request = request
        self._deadline = started + float(request["timeout_s"])
        self._started = started
        self._logger = RuntimeLogger(request["request_id"])

    def getRequestID(self) -> str:
        return str(self._request["request_id"])

    def getRemainingTimeInMilliSeconds(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def getRunningTimeInSeconds(self) -> int:
        return int(float(self._request["timeout_s"]))

    def getFunctionName(self) -> str:
        return str(self._request["function_name"])

    def getVersion(self) -> str:
        return str(self._request["function_version"])

    def getAlias(self) -> str:
        return ""

    def getPackage(self) -> str:
        return str(self._request["package"])

    def getProjectID(self) -> str:
        return str(self._request["project_id"])

    def getMemorySize(self) -> int:
        return int(self._request["memory_mb"])

    def getCPUNumber(self) -> int:
        return int(self._request["cpu_millicores"])

    def getUserData(self, key: str, default: Optional[str] = None) -> Optional[str]:
        try:
            data = json.loads(os.environ.get("RUNTIME_USERDATA") or "{}")
        except ValueError:
            return default
        value = data.get(key, default) if isinstance(data, dict) else default
        return None if value is None else str(value)

    def getLogger(self) -> RuntimeLogger:
        return self._logger

    # No credentials exist in the emulator; the getters exist so that code calling them runs.
    def getAccessKey(self) -> str:
        return ""

    def getSecretKey(self) -> str:
        return ""

    def getSecurityAccessKey(self) -> str:
        return ""

    def getSecuritySecretKey(self) -> str:
        return ""

    def getSecurityToken(self) -> str:
        return ""

    def getToken(self) -> str:
        return ""


class Worker:
    def __init__(self, out_fd: int) -> None:
        self._out = os.fdopen(out_fd, "w", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()
        self.handler: Any = None

    def send(self, message: Dict[str, Any]) -> None:
        with self._lock:
            self._out.write(json.dumps(message, default=str) + "\n")
            self._out.flush()

    def sync(self, seq: int) -> None:
        """Mark the end of one invocation's output on both streams (one atomic write each)."""
        marker = f"\n{SYNC}{seq}\x1e\n".encode()
        for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
            os.write(fd, marker)

    def load(self, path: str, handler_name: str) -> None:
        started = time.monotonic()
        error: Optional[Dict[str, str]] = None
        try:
            module_name = os.path.splitext(os.path.basename(path))[0]
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            handler = getattr(module, handler_name, None)
            if not callable(handler):
                raise AttributeError(f"{os.path.basename(path)} defines no callable {handler_name!r}")
            self.handler = handler
        except BaseException as exc:
            error = _error(exc)
        self.sync(0)
        self.send({"op": "ready", "ok": error is None, "error": error,
                   "init_ms": (time.monotonic() - started) * 1000, "maxrss_kb": _maxrss_kb()})

    def invoke(self, request: Dict[str, Any]) -> None:
        started = time.monotonic()
        context = Context(request, started)
        answer: Dict[str, Any] = {"op": "result", "seq": request["seq"]}
        try:
            result = self.handler(request.get("event"), context)
            try:
                json.dumps(result)
            except (TypeError, ValueError):
                result = str(result)
            answer.update(ok=True, result=result)
        except BaseException as exc:
            answer.update(ok=False, error=_error(exc))
        answer["duration_ms"] = (time.monotonic() - started) * 1000
        self.sync(int(request["seq"]))
        answer["maxrss_kb"] = _maxrss_kb()
        self.send(answer)


def _error(exc: BaseException) -> Dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


def main() -> None:
    path, handler_name, in_fd, out_fd = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # The function's code directory comes first on sys.path, as in the runtime; not this file's.
    sys.path[0] = os.path.dirname(os.path.abspath(path))
    code_root = os.environ.get("RUNTIME_CODE_ROOT")
    if code_root and code_root not in sys.path:
        sys.path.insert(1, code_root)
    requests = os.fdopen(in_fd, "r", encoding="utf-8")
    worker = Worker(out_fd)
    worker.load(path, handler_name)
    for line in requests:
        request = json.loads(line)
        if request.get("op") == "exit":
            break
        if worker.handler is not None:
            threading.Thread(target=worker.invoke, args=(request,), daemon=True).start()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
