"""A local HTTP reward server speaking OpenRLHF's remote-reward protocol, with scripted faults.

POST {"query": [...], "prompts": [...], "labels": [...]} -> {"rewards": [...]}. Each request pops the next
entry of `script`: "500" answers HTTP 500, "nan" answers NaN rewards, "ok" (or an empty script) scores
every query with `score` (default: its length). `seen` keeps every request body.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedRewardServer:
    def __init__(self, score: Callable[[str], float] = len) -> None:
        self.script: list[str] = []
        self.seen: list[dict] = []
        self.score = score
        self.url = ""

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.seen.append(body)
                kind = server.script.pop(0) if server.script else "ok"
                if kind == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                nan = float("nan")
                rewards = [float(server.score(q)) if kind == "ok" else nan for q in body["query"]]
                data = json.dumps({"rewards": rewards}).encode()  # NaN is written as Python's json does
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler

    @contextmanager
    def running(self):
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{httpd.server_address[1]}/get_reward"
        try:
            yield self
        finally:
            httpd.shutdown()
