"""The simulated Kaleyra's HTTP side: a threading server on loopback, and the handler that
hands each request to its :class:`~sync.simulator.account.Simulator` and sends the answer
(a trickle byte by byte, a drop as a hang-up)."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from sync.simulator.faults import Trickle
from sync.simulator.vendor import VENDOR_ERRORS, json_response

if TYPE_CHECKING:
    from sync.simulator.account import Simulator

__all__ = ["Handler", "Server"]


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    simulator: Simulator

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up on a trickle or a bomb is the point, not news


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real API gateway does
    disable_nagle_algorithm = True  # headers and body leave at once, no 40 ms delayed-ACK stall
    wbufsize = 64 * 1024  # one write per response; handle_one_request flushes it
    server: Server

    def do_GET(self) -> None:
        sid = self._sid()
        if sid is None:
            return self._send(404, {"Content-Type": "text/html"}, b"<html>Not Found</html>")
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        self._send(*self.server.simulator.get_blocklist(sid, self.headers.get("api-key"), query))

    def do_POST(self) -> None:
        sid = self._sid()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if sid is None:
            return self._send(404, {"Content-Type": "text/html"}, b"<html>Not Found</html>")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._send(*json_response(*VENDOR_ERRORS["WA400"]))
        self._send(*self.server.simulator.change_blocklist(sid, self.headers.get("api-key"), body))

    def _sid(self) -> str | None:
        parts = urlsplit(self.path).path.strip("/").split("/")
        if len(parts) == 4 and parts[0] in ("v1", "v2") and parts[2:] == ["contacts", "blocklisted"]:
            return parts[1]
        return None

    def _send(self, status: int | None, headers: dict[str, str], body: bytes | Trickle) -> None:
        if status is None:  # the "drop" fault: hang up without an answer
            self.close_connection = True
            return
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        data = body.data if isinstance(body, Trickle) else body
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not isinstance(body, Trickle):
            self.wfile.write(body)
            return
        self.wfile.flush()
        try:
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(body.pace)
        except OSError:  # the client gave up on us, as it should
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: a sweep is thousands of requests
