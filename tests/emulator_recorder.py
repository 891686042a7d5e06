"""A hand-written extension for the emulator's tests: registers, subscribes, and records what it gets.

Standard library only, started by a POSIX sh launcher like any third-party extension. Its behaviour
comes from a JSON file named after its script (``extension/<script>.json``); every request it makes or
receives is appended as one JSON line to the ``record`` file, which the test reads afterwards.
"""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

with open(sys.argv[1]) as config_file:
    config = json.load(config_file)
name = config["name"]
port = int(config.get("port", 8081))
record_lock = threading.Lock()
invokes = {"count": 0}


def record(kind, **data):
    with record_lock, open(config["record"], "a") as handle:
        handle.write(json.dumps({"kind": kind, "extension": name, "at": time.time(), **data}) + "\n")


def platform(path, headers, body):
    request = urllib.request.Request("http://" + os.environ["EXTENSION_API_ADDR"] + path, data=body,
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        if self.path == "/extension/invoke":
            invokes["count"] += 1
            record("invoke", body=body)
            print("[Extension] invoke " + str(body.get("traceId")), flush=True)
            if config.get("crash_after_invokes") and invokes["count"] >= config["crash_after_invokes"]:
                print("crashing on purpose", flush=True)
                os._exit(3)
            status = int(config.get("invoke_status", 200))
        else:
            record("telemetry", path=self.path, events=body)
            time.sleep(float(config.get("telemetry_delay_s", 0)))
            status = int(config.get("telemetry_status", 200))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main():
    record("start", env=dict(os.environ), cwd=os.getcwd(), argv0=sys.argv[0], pid=os.getpid())
    print("recorder " + name + " starting", flush=True)
    if config.get("exit_before_register"):
        print("giving up before registering", flush=True)
        sys.exit(int(config["exit_before_register"]))
    if config.get("never_register"):
        time.sleep(3600)
    # http.server's listen backlog of 5 would drop connections when invokes overlap.
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    headers = {"FunctionGraph-Extension-Name": config.get("register_name", name),
               "FunctionGraph-Extension-Address": config.get("register_address", f"127.0.0.1:{port}"),
               "Content-Type": "application/json"}
    status, answer = platform("/extension/register", headers, b"{}")
    record("register", status=status, answer=answer)
    types = config.get("subscribe")
    if types is not None:
        body = config.get("subscribe_body") or {
            "subscriber": {"protocol": "POST", "uri": f"http://127.0.0.1:{port}"}, "types": types}
        sub_headers = {"Content-Type": "application/json"}
        if config.get("subscribe_with_name", True):
            sub_headers["FunctionGraph-Extension-Name"] = name
        status, answer = platform("/telemetry", sub_headers, json.dumps(body).encode())
        record("subscribe", status=status, answer=answer)
    for line in config.get("extension_logs", []):
        print("[Extension]" + line, flush=True)
    while True:
        time.sleep(3600)


main()
