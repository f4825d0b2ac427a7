"""A loopback HTTP server in a thread for tests of HTTP clients (admin API, etcd gateway)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# answer(method, path, request body) -> (status code, response body)
Answer = Callable[[str, str, bytes], tuple[int, bytes]]


@contextmanager
def fake_http_server(answer: Answer, *, keep_alive: bool = False) -> Iterator[int]:
    """Serve `answer` for GET and POST on 127.0.0.1; yields the port; stops the server after.
    `keep_alive`: HTTP/1.1 with persistent connections (else HTTP/1.0, one request each)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            code, body = answer(self.command, self.path, self.rfile.read(length))
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _reply

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
