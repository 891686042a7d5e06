"""Another developer's extension: listens on the given ports of 8081-8090 and answers like an fgext agent.

``python tests/foreign_agent.py READY_FILE 8081 8082 8083`` binds every port (exit 1 if one is taken),
writes READY_FILE once all listen, and answers ``POST /`` with ``{"accepted": 0}`` and
``POST /extension/invoke`` with ``{}`` until killed. Standard library only. Tests start it to prove they
talk only to the agents they started.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"accepted": 0} if self.path == "/" else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    ready_file, ports = sys.argv[1], [int(port) for port in sys.argv[2:]]
    servers = []
    for port in ports:
        try:
            servers.append(ThreadingHTTPServer(("127.0.0.1", port), Handler))
        except OSError as error:
            print(f"cannot listen on 127.0.0.1:{port}: {error}", file=sys.stderr)
            sys.exit(1)
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    with open(ready_file, "w") as handle:
        handle.write(" ".join(map(str, ports)))
    threading.Event().wait()


main()
