"""HTTP calls bounded by one deadline: each attempt passes the time left on as
its HTTP timeout, so retries, sleeps and slow responses all fit in it.

Runs without a network: it serves its own flaky and hanging endpoints on
127.0.0.1 (a port the OS picks).  docs/timeouts.md explains the pattern;
with requests or httpx it is the same call with timeout=http_timeout().
"""
import asyncio
import http.server
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Optional

import buttress

# ------------------------------------------------------- a local server

hits = {"/flaky": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/hang":
            time.sleep(1.5)  # longer than any deadline below
        elif self.path == "/flaky":
            hits["/flaky"] += 1
            if hits["/flaky"] < 3:  # two 503s, then an answer
                self.send_response(503)
                self.end_headers()
                return
        body = b"hello\n"
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first: that is the point of /hang

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet


# ------------------------------------------------------- the pattern


def http_timeout(default: float = 10.0) -> float:
    """The timeout for the next HTTP call: the time the enclosing deadline
    leaves, or `default` when there is none.  Never 0: to a socket that
    means "do not block", to urllib3 it is an error.  None would mean "wait
    forever"."""
    left = buttress.remaining()
    if left is None:
        return default
    if left <= 0:
        raise TimeoutError("no time left before the deadline")
    return left


@buttress.retry(attempts=5, deadline=0.5, backoff=buttress.Backoff(base=0.02, cap=0.1))
def get(url: str) -> bytes:
    # with requests: requests.get(url, timeout=http_timeout()).content
    with urllib.request.urlopen(url, timeout=http_timeout()) as r:
        data: bytes = r.read()
        return data


# asyncio: timeout= cancels an attempt that runs too long (each attempt
# still ends at the deadline at the latest).
@buttress.retry(attempts=3, deadline=0.5, timeout=0.15, backoff=buttress.Backoff(base=0.02))
async def aget(host: str, port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True  # a hanging handler never holds up the exit
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = "127.0.0.1", server.server_port
    base = f"http://{host}:{port}"
    try:
        print("flaky:", get(base + "/flaky"), f"after {hits['/flaky']} attempts")

        started = time.monotonic()
        try:
            get(base + "/hang")
        except (TimeoutError, urllib.error.URLError) as e:
            took = time.monotonic() - started
            print(f"hang: gave up after {took:.2f} s (deadline 0.5 s): {e!r}")
        m = get.metrics()
        print(f"get: {m['calls']} calls, {m['attempts']} attempts, "
              f"{m['giveups_deadline']} deadline give-up")

        started = time.monotonic()
        try:
            asyncio.run(aget(host, port, "/hang"))
        except TimeoutError:
            took = time.monotonic() - started
            print(f"async hang: {aget.metrics()['attempts']} attempts cancelled "
                  f"by timeout=0.15 in {took:.2f} s")
        remaining: Optional[float] = buttress.remaining()
        print("outside any call, remaining() is", remaining)
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
