"""A real S3 server on loopback for the s3:// store tests: moto's server, behind a fault proxy.

    python tests/s3/s3server.py            # prints "http://127.0.0.1:PORT PID" once it listens

moto (moto[server], from PyPI) is a full S3 implementation: buckets, objects, ETags,
multipart uploads, DeleteObjects, and the conditional PutObject ocb relies on (If-Match and
If-None-Match: * answer 412; checked by tests/unit/test_stores.py before the contract runs).
It cannot answer 503 SlowDown or hold a request by itself, so the client talks to a small
proxy in front of it, in this same process, that forwards every request unchanged unless a
fault is armed through its control paths (no bucket name starts with "_"):

    POST   /__faults  {"status": 503, "code": "SlowDown", "times": 3, "retry_after": 1,
                       "method": "PUT", "match": "part"}     answer instead of forwarding
    POST   /__faults  {"hold": true, "match": "ID", "times": 1}   hold until released
    POST   /__faults  {"status": 503, "after": true, ...}  forward, then answer the fault (a lost answer)
    POST   /__faults  {"strip_conditional": true}     forward without If-Match / If-None-Match
    POST   /__release                                 let held requests go on
    DELETE /__faults                                  forget every fault and count, release held ones
    GET    /__stats                                   {"requests", "faulted", "held", "by_method"}

`match` is a substring of the request's path and query; `times` -1 means every time. Both
servers listen on 127.0.0.1 only and stop when this process does (SIGTERM).
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOLD_LIMIT_SECONDS = 60.0  # a held request goes on by itself after this: nothing hangs for ever
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
               "expect"}  # the proxy has read the whole body: the 100-continue is answered


class Faults:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: list[dict] = []
        self.strip_conditional = False
        self.release = threading.Event()
        self.stats = {"requests": 0, "faulted": 0, "held": 0, "by_method": {}}

    def clear(self) -> None:
        with self.lock:
            self.rules, self.strip_conditional = [], False
            self.stats = {"requests": 0, "faulted": 0, "held": 0, "by_method": {}}
            self.release.set()

    def add(self, rule: dict) -> None:
        with self.lock:
            if rule.get("strip_conditional"):
                self.strip_conditional = True
                return
            if rule.get("hold"):
                self.release.clear()
            self.rules.append({"times": 1, **rule})

    def pick(self, method: str, target: str) -> dict | None:
        with self.lock:
            self.stats["requests"] += 1
            self.stats["by_method"][method] = self.stats["by_method"].get(method, 0) + 1
            for rule in self.rules:
                if rule.get("method") not in (None, method) or rule.get("match", "") not in target:
                    continue
                if rule["times"] == 0:
                    continue
                if rule["times"] > 0:
                    rule["times"] -= 1
                self.stats["held" if rule.get("hold") else "faulted"] += 1
                return dict(rule)
        return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_proxy(upstream_port: int, faults: Faults) -> ThreadingHTTPServer:
    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet: the tests read stats, not logs
            return

        def _json(self, status: int, value: object) -> None:
            body = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _control(self, method: str, body: bytes) -> bool:
            if self.path == "/__faults" and method == "POST":
                faults.add(json.loads(body or b"{}"))
                self._json(200, {"ok": True})
            elif self.path == "/__faults" and method == "DELETE":
                faults.clear()
                self._json(200, {"ok": True})
            elif self.path == "/__release" and method == "POST":
                faults.release.set()
                self._json(200, {"ok": True})
            elif self.path == "/__stats" and method == "GET":
                with faults.lock:
                    self._json(200, json.loads(json.dumps(faults.stats)))
            else:
                return False
            return True

        def _error(self, rule: dict) -> None:
            code = rule.get("code", "SlowDown")
            body = b"" if self.command == "HEAD" else (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{rule.get('message', 'injected by the test proxy')}</Message>"
                "<RequestId>ocb-test</RequestId></Error>").encode()
            self.send_response(int(rule.get("status", 503)))
            self.send_header("Content-Type", "application/xml")
            if "retry_after" in rule:
                self.send_header("Retry-After", str(rule["retry_after"]))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.startswith("/__") and self._control(self.command, body):
                return
            rule = faults.pick(self.command, self.path)
            if rule is not None and rule.get("hold"):
                faults.release.wait(HOLD_LIMIT_SECONDS)
                rule = None
            if rule is not None and not rule.get("after"):
                self._error(rule)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            if faults.strip_conditional:
                headers = {k: v for k, v in headers.items() if k.lower() not in ("if-match", "if-none-match")}
            upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                if rule is not None:  # "after": the request took effect, its answer is lost
                    self._error(rule)
                    return
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in HOP_HEADERS and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                upstream.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    server = ThreadingHTTPServer(("127.0.0.1", _free_port()), Proxy)
    server.daemon_threads = True
    return server


def main() -> int:
    from moto.server import ThreadedMotoServer

    moto_port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    proxy = make_proxy(moto_port, Faults())
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(f"http://127.0.0.1:{proxy.server_address[1]}", flush=True)
    try:
        proxy.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.server_close()
        moto.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
