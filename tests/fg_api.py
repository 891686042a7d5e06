"""A stand-in for the FunctionGraph API on 127.0.0.1, for ``fgext publish``'s tests.

It plays the five calls publish makes, from the request and response tables of
shared/spec/functiongraph-api-dependencies.zh.txt (7.3.3 create a dependency version, 7.3.5 get one,
7.6.4 get a function's code, 7.6.5 update it), and records every request the SDK really sends: method,
path as sent, headers and JSON body. It is the only stand-in: the cloud cannot exist here.

Faults are queued per call (``fail("PUT code", 500, "FSS.0500", "...")``) and used once each; status 0
closes the connection without an answer, as a network failure would.

``python -m tests.fg_api`` runs it on its own (docs/packaging.md, "Publish it"): it prints its endpoint,
project ID and a function's URN, then one line per request, until SIGINT or SIGTERM.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote

DEPENDENCY_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_.\-]{0,94}[A-Za-z0-9])?$")
# The runtime enum of 7.3.3 (the Python ones and a few others); it names no Python3.12.
RUNTIMES = {"Python2.7", "Python3.6", "Python3.9", "Python3.10", "Node.js18.15", "Custom", "http", "Custom Image"}
_ROUTES = [
    ("POST", re.compile(r"^/v2/(?P<project>[^/]+)/fgs/dependencies/version$"), "POST version"),
    ("GET", re.compile(r"^/v2/(?P<project>[^/]+)/fgs/dependencies/(?P<dep>[^/]+)/version/(?P<ver>\d+)$"),
     "GET version"),
    ("GET", re.compile(r"^/v2/(?P<project>[^/]+)/fgs/functions/(?P<urn>[^/]+)/code$"), "GET code"),
    ("PUT", re.compile(r"^/v2/(?P<project>[^/]+)/fgs/functions/(?P<urn>[^/]+)/code$"), "PUT code"),
]


@dataclass
class Request:
    """One request as it arrived."""

    method: str
    path: str  # as sent, percent-encoding included
    headers: Dict[str, str]
    body: Optional[Any]
    call: Optional[str]


@dataclass
class Function:
    """A function's code settings, as 7.6.4 returns them."""

    urn: str
    runtime: str = "Python3.9"
    code_type: str = "zip"
    code_filename: str = "index.zip"
    code_url: str = ""
    file: str = ""
    link: str = "https://bucket.obs.example/functions/index.zip"
    depend_version_list: List[str] = field(default_factory=list)
    concurrency: int = -1


@dataclass
class FunctionGraphApi:
    """The API on a real socket of 127.0.0.1 (port chosen by the OS); ``start()``/``stop()`` explicit."""

    project_id: str = "0123456789abcdef0123456789abcdef"
    functions: Dict[str, Function] = field(default_factory=dict)
    versions: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # version id -> the version's record
    requests: List[Request] = field(default_factory=list)
    faults: Dict[str, List[Tuple[int, str, str]]] = field(default_factory=dict)
    delays: Dict[str, List[float]] = field(default_factory=dict)
    _server: Optional[ThreadingHTTPServer] = None
    _thread: Optional[threading.Thread] = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: called with each request and the status it was answered with (the standalone mode prints them)
    on_answer: Optional[Any] = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_function(self, name: str, **settings: Any) -> Function:
        urn = f"urn:fss:cn-north-4:{self.project_id}:function:default:{name}:latest"
        function = Function(urn=urn, **settings)
        self.functions[urn] = function
        return function

    def add_version(self, name: str, *, runtime: str = "Python3.9", size: int = 1000) -> Dict[str, Any]:
        """A dependency version that exists already (e.g. an earlier fgext release)."""
        return self._create(name, runtime, size, "", None, "zip")

    def fail(self, call: str, status: int, error_code: str = "", error_msg: str = "") -> None:
        """Answer the next ``call`` ("POST version", "GET code", ...) with this error; status 0 drops it."""
        self.faults.setdefault(call, []).append((status, error_code, error_msg))

    def slow(self, call: str, seconds: float) -> None:
        """Apply the next ``call`` at once but answer it only after ``seconds`` (a late answer)."""
        self.delays.setdefault(call, []).append(seconds)

    def calls(self, call: Optional[str] = None) -> List[Request]:
        return [r for r in self.requests if call is None or r.call == call]

    def _create(self, name: str, runtime: str, size: int, etag: str, description: Optional[str],
                depend_type: str) -> Dict[str, Any]:
        same = [v for v in self.versions.values() if v["name"] == name]
        dep_id = same[0]["dep_id"] if same else str(uuid.uuid4())
        version = {
            "id": str(uuid.uuid4()), "owner": "domain0001", "link": f"https://bucket.obs.example/depends/{name}.zip",
            "runtime": runtime, "etag": etag, "size": size, "name": name, "description": description or "",
            "file_name": f"{name}.zip" if depend_type == "zip" else "", "version": len(same) + 1,
            "dep_id": dep_id, "last_modified": 1660029887,
        }
        self.versions[version["id"]] = version
        return version

    def code(self, function: Function) -> Dict[str, Any]:
        """The 7.6.4 answer for ``function``."""
        return {
            "func_urn": function.urn, "func_name": function.urn.split(":")[-2], "domain_id": "domain0001",
            "runtime": function.runtime, "code_type": function.code_type, "code_url": function.code_url,
            "code_filename": function.code_filename, "code_size": 245, "digest": "39d51ae3",
            "last_modified": "2019-10-31 11:37:58", "func_code": {"file": function.file, "link": function.link},
            "depend_list": sorted({self.versions[v]["dep_id"] for v in function.depend_version_list
                                   if v in self.versions}),
            "depend_version_list": list(function.depend_version_list),
            "strategy_config": {"concurrency": function.concurrency},
            "dependencies": [self._dependency(v) for v in function.depend_version_list if v in self.versions],
        }

    def _dependency(self, version_id: str) -> Dict[str, Any]:
        v = self.versions[version_id]
        keys = ("id", "owner", "link", "etag", "size", "name", "description", "file_name", "version", "dep_id")
        return {key: v[key] for key in keys}

    def handle(self, method: str, raw_path: str, headers: Dict[str, str],
               body: Optional[Any]) -> Tuple[int, Dict[str, Any], float]:
        """(status, JSON answer, seconds to wait before answering) for one request; a raised
        ConnectionAbortedError drops the connection."""
        status, answer = self._handle(method, raw_path, headers, body)
        with self._lock:
            delays = self.delays.get(self.requests[-1].call or "")
            return status, answer, delays.pop(0) if delays else 0.0

    def _handle(self, method: str, raw_path: str, headers: Dict[str, str],
                body: Optional[Any]) -> Tuple[int, Dict[str, Any]]:
        path = raw_path.split("?", 1)[0]
        route = next(((name, m) for verb, pattern, name in _ROUTES if verb == method
                      for m in [pattern.match(path)] if m), None)
        with self._lock:
            self.requests.append(Request(method, raw_path, headers, body, route[0] if route else None))
            if route is None:
                return 404, {"error_code": "FSS.0404", "error_msg": f"no such API: {method} {path}"}
            name, match = route
            queued = self.faults.get(name)
            if queued:
                status, code, msg = queued.pop(0)
                if status == 0:
                    raise ConnectionAbortedError(name)
                return status, {"error_code": code, "error_msg": msg}
            if not headers.get("authorization", "").startswith("SDK-HMAC-SHA256 ") or "x-sdk-date" not in headers:
                return 401, {"error_code": "FSS.0401", "error_msg": "Unauthorized: no AK/SK signature"}
            if match.group("project") != self.project_id:
                return 403, {"error_code": "FSS.0403", "error_msg": "project does not match the credential"}
            return self._route(name, match, body)

    def _route(self, name: str, match: re.Match[str], body: Any) -> Tuple[int, Dict[str, Any]]:
        if name == "POST version":
            return self._post_version(body)
        if name == "GET version":
            found = [v for v in self.versions.values()
                     if v["dep_id"] == match.group("dep") and str(v["version"]) == match.group("ver")]
            if not found:
                return 404, {"error_code": "FSS.1051", "error_msg": "Not found the dependency version"}
            return 200, found[0]
        function = self.functions.get(unquote(match.group("urn")))
        if function is None:
            return 404, {"error_code": "FSS.1052", "error_msg": "Not found the function version"}
        if name == "PUT code":
            if not isinstance(body, dict) or not isinstance(body.get("func_code"), dict):
                return 400, {"error_code": "FSS.0400", "error_msg": "func_code is required"}
            unknown = [v for v in body.get("depend_version_list") or [] if v not in self.versions]
            if unknown:
                return 404, {"error_code": "FSS.1051", "error_msg": f"Not found the dependency version {unknown[0]}"}
            function.code_type = body.get("code_type") or function.code_type
            function.code_url = body.get("code_url") or ""
            function.code_filename = body.get("code_filename") or ""
            function.file = body["func_code"].get("file") or ""
            function.link = body["func_code"].get("link") or ""
            function.depend_version_list = list(body.get("depend_version_list") or [])
        return 200, self.code(function)

    def _post_version(self, body: Any) -> Tuple[int, Dict[str, Any]]:
        if not isinstance(body, dict):
            return 400, {"error_code": "FSS.0400", "error_msg": "the body is not a JSON object"}
        for key in ("depend_type", "runtime", "name"):
            if not body.get(key):
                return 400, {"error_code": "FSS.0400", "error_msg": f"{key} is required"}
        if not DEPENDENCY_NAME.match(body["name"]):
            return 400, {"error_code": "FSS.0400", "error_msg": "invalid dependency name"}
        if body["runtime"] not in RUNTIMES:
            return 400, {"error_code": "FSS.0400", "error_msg": f"invalid runtime {body['runtime']}"}
        if body["depend_type"] == "zip":
            try:
                data = base64.b64decode(body.get("depend_file") or "", validate=True)
            except ValueError:
                return 400, {"error_code": "FSS.0400", "error_msg": "depend_file is not base64"}
            if not data.startswith(b"PK"):
                return 400, {"error_code": "FSS.0400", "error_msg": "depend_file is not a zip"}
            if len(data) > 40 * 1024 * 1024:
                return 400, {"error_code": "FSS.0400", "error_msg": "depend_file is larger than 40M"}
            size, etag = len(data), hashlib.md5(data).hexdigest()
        elif body["depend_type"] == "obs":
            if not body.get("depend_link"):
                return 400, {"error_code": "FSS.0400", "error_msg": "depend_link is required for obs"}
            size, etag = 52_428_800, "0" * 32
        else:
            return 400, {"error_code": "FSS.0400", "error_msg": "depend_type must be zip or obs"}
        return 200, self._create(body["name"], body["runtime"], size, etag, body.get("description"),
                                 body["depend_type"])

    def start(self) -> FunctionGraphApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                headers = {key.lower(): value for key, value in self.headers.items()}
                try:
                    status, answer, delay = api.handle(self.command, self.path, headers, body)
                except ConnectionAbortedError:
                    self.close_connection = True
                    return
                if delay:
                    time.sleep(delay)
                if api.on_answer is not None:
                    api.on_answer(api.requests[-1], status)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Request-Id", "req-" + uuid.uuid4().hex[:12])
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fg-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


def main() -> int:
    """Serve until SIGINT/SIGTERM with one function that has an earlier fgext-py39 version attached."""
    api = FunctionGraphApi()
    earlier = api.add_version("fgext-py39")
    other = api.add_version("requests-lib")
    function = api.add_function("hello", depend_version_list=[other["id"], earlier["id"]])

    def show(request: Request, status: int) -> None:
        body = request.body if request.method != "GET" else None
        if isinstance(body, dict) and "depend_file" in body:
            body = {**body, "depend_file": f"<{len(body['depend_file'])} base64 characters>"}
        print(f"{request.method} {unquote(request.path)} -> {status}" + (f" {json.dumps(body)}" if body else ""),
              flush=True)

    api.on_answer = show
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    api.start()
    print(f"endpoint {api.endpoint}\nproject_id {api.project_id}\nfunction {function.urn}", flush=True)
    print(f"(the function lists {other['id']} (requests-lib) and {earlier['id']} (fgext-py39 version 1))",
          flush=True)
    stop.wait()
    api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
