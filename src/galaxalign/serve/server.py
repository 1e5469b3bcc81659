"""Running the search app under uvicorn, with limits that keep stalled, slow or excess clients from
holding the server: a deadline and a size cap for each request's headers, a minimum rate for its
body, a keep-alive timeout and a cap on concurrent connections (docs/search.md, "Limits").
"""
from __future__ import annotations

import errno

# OUR CHOICE: a client has 10 s from connecting (or from the end of its previous response) to
# send a request's headers; an idle keep-alive connection is closed after 5 s; beyond 256
# concurrent connections or requests uvicorn answers 503 instead of queueing without bound.
HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5
MAX_CONNECTIONS = 256
# OUR CHOICE: the serving process hands the GIL over every 0.5 ms (Python's default: 5 ms), so a
# thread-pool job (a thumbnail, a forward pass) cannot hold up the event loop's answers for long.
SWITCH_INTERVAL_S = 0.0005
# OUR CHOICE: a request line and headers of at most 64 KiB (nginx allows 32 KiB, Node.js 16 KiB;
# a browser sends < 2 KiB): a bigger head is answered 431 and the connection closed, before
# uvicorn buffers it.
MAX_HEADER_BYTES = 64 * 1024
# OUR CHOICE: once its headers are in, a request's body must arrive at 16 KiB/s on average, after
# a grace of 10 s (an 8 MB upload may take 10 + 512 s; a trickle of 1 byte/s is cut after ~10 s).
# The clock stops while the server itself is not reading (flow control). Cut requests get a 408.
BODY_GRACE_S = 10.0
MIN_BODY_RATE = 16 * 1024


def http_implementation() -> str:
    """``httptools`` (uvicorn's C parser: a good part less CPU per request than pure-Python h11)
    where it is installed, else ``h11``."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def _raw_response(status: int, reason: str, detail: str) -> bytes:
    import json

    body = json.dumps({"detail": detail}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


class _HeaderDeadline:
    """Mixin for a uvicorn HTTP protocol: close a connection whose next request's headers do not
    arrive within ``deadline_s`` of its start (or of the end of its last response), or run past
    ``max_header_bytes`` (431), or whose body then arrives slower than ``min_body_rate`` bytes/s
    after ``body_grace_s`` (408). Subclasses say when headers are complete (:meth:`_headers_done`)
    and may refine :meth:`_still_waiting`."""

    deadline_s = HEADER_TIMEOUT_S
    max_header_bytes = MAX_HEADER_BYTES
    body_grace_s = BODY_GRACE_S
    min_body_rate = MIN_BODY_RATE
    _deadline = None
    _head_bytes = 0
    _head_tail = b""
    _body_watch = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._head_bytes, self._head_tail = 0, b""
        self._deadline = self.loop.call_later(self.deadline_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # -- the size of the head ------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._deadline is not None and self.max_header_bytes and self._head_too_big(data):
            self._refuse(431, "Request Header Fields Too Large",
                         f"request line and headers over the limit of {self.max_header_bytes} bytes")
            return
        if self._body_watch is not None:
            self._body_bytes += len(data)
        super().data_received(data)

    def _head_too_big(self, data: bytes) -> bool:
        """Count the bytes of a head still being received; True once they pass the limit."""
        seen = self._head_tail + data
        end = seen.find(b"\r\n\r\n")
        if end >= 0:  # the head ends in this chunk: what follows is body
            return self._head_bytes + end - len(self._head_tail) + 4 > self.max_header_bytes
        self._head_bytes += len(data)
        self._head_tail = seen[-3:]
        return self._head_bytes > self.max_header_bytes

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        self._disarm()
        self._stop_body_watch()
        if not self.transport.is_closing():
            cycle = getattr(self, "cycle", None)
            if cycle is None or cycle.response_complete or not cycle.response_started:  # no answer under way
                self.transport.write(_raw_response(status, reason, detail))
            self.transport.close()

    # -- the rate of the body --------------------------------------------------------------------
    def _headers_done(self) -> None:
        """A request's headers are in: the head deadline is met, the body's clock starts."""
        self._disarm()
        self._stop_body_watch()
        if self.min_body_rate:
            self._body_start, self._body_bytes = self.loop.time(), 0
            self._body_watch = self.loop.call_later(1.0, self._check_body)

    def _stop_body_watch(self) -> None:
        if self._body_watch is not None:
            self._body_watch.cancel()
            self._body_watch = None

    def _check_body(self) -> None:
        self._body_watch = None
        cycle = getattr(self, "cycle", None)
        if cycle is None or not cycle.more_body or cycle.response_complete or self.transport.is_closing():
            return  # the body is complete (or the request answered): nothing to watch
        now = self.loop.time()
        if self.flow.read_paused:  # the server is not reading: the client cannot be blamed
            self._body_start += 1.0
        elif now - self._body_start > self.body_grace_s + self._body_bytes / self.min_body_rate:
            self._refuse(408, "Request Timeout", f"request body arriving slower than {self.min_body_rate} "
                         f"bytes/s (after {self.body_grace_s:g} s); send it faster")
            return
        self._body_watch = self.loop.call_later(1.0, self._check_body)

    def _still_waiting(self) -> bool:
        return True

    def _expire(self) -> None:
        self._deadline = None
        if self._still_waiting() and not self.transport.is_closing():
            self.transport.close()  # no request's headers arrived in time

    def connection_lost(self, exc) -> None:
        self._disarm()
        self._stop_body_watch()
        super().connection_lost(exc)


def header_timeout_protocol(timeout_s: float = HEADER_TIMEOUT_S, http: str = "auto", *,
                            max_header_bytes: int = MAX_HEADER_BYTES, body_grace_s: float = BODY_GRACE_S,
                            min_body_rate: int = MIN_BODY_RATE):
    """uvicorn's HTTP protocol (``http``: ``h11``, ``httptools`` or ``auto``, see
    :func:`http_implementation`), closing connections that do not deliver a request's headers in time.

    uvicorn alone holds a connection that never completes its request line and headers for ever
    (its keep-alive timer only starts after a response), so half-open and trickling clients pile up.
    """
    http = http_implementation() if http == "auto" else http
    if http == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        class HttpToolsHeaderTimeoutProtocol(_HeaderDeadline, HttpToolsProtocol):
            deadline_s = timeout_s

            def on_headers_complete(self) -> None:
                super().on_headers_complete()
                self._headers_done()  # the deadline is met

            def on_response_complete(self) -> None:
                pipelined = bool(self.pipeline)  # a request already read: its headers came in time
                super().on_response_complete()
                if not pipelined and not self.transport.is_closing():
                    self._arm()

        return _limited(HttpToolsHeaderTimeoutProtocol, max_header_bytes, body_grace_s, min_body_rate)
    if http != "h11":
        raise ValueError(f"unknown HTTP implementation {http!r}: expected h11, httptools or auto")
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(_HeaderDeadline, H11Protocol):
        deadline_s = timeout_s
        _armed_cycle = None

        def _arm(self) -> None:
            super()._arm()
            self._armed_cycle = self.cycle

        def _still_waiting(self) -> bool:
            return self.cycle is self._armed_cycle  # no new request started since arming

        def handle_events(self) -> None:
            super().handle_events()
            if self._deadline is not None and self.cycle is not self._armed_cycle:
                self._headers_done()  # a request's headers arrived: the deadline is met

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

    return _limited(HeaderTimeoutProtocol, max_header_bytes, body_grace_s, min_body_rate)


def _limited(protocol, max_header_bytes: int, body_grace_s: float, min_body_rate: int):
    return type(protocol.__name__, (protocol,), {"max_header_bytes": int(max_header_bytes),
                                                 "body_grace_s": float(body_grace_s),
                                                 "min_body_rate": int(min_body_rate)})


def server_config(app, host: str = "127.0.0.1", port: int = 8000, *, header_timeout_s: float = HEADER_TIMEOUT_S,
                  keep_alive_s: int = KEEP_ALIVE_S, max_connections: int = MAX_CONNECTIONS, log_level: str = "warning",
                  http: str = "auto", max_header_bytes: int = MAX_HEADER_BYTES, body_grace_s: float = BODY_GRACE_S,
                  min_body_rate: int = MIN_BODY_RATE):
    """The uvicorn ``Config`` that ``galaxalign serve`` runs ``app`` with (limits: module constants)."""
    import uvicorn

    for name, value in (("header_timeout_s", header_timeout_s), ("max_header_bytes", max_header_bytes),
                        ("body_grace_s", body_grace_s), ("min_body_rate", min_body_rate),
                        ("max_connections", max_connections)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"server limit {name} must be a positive number, got {value!r}")
    protocol = header_timeout_protocol(header_timeout_s, http, max_header_bytes=max_header_bytes,
                                       body_grace_s=body_grace_s, min_body_rate=min_body_rate)
    return uvicorn.Config(app, host=host, port=port, http=protocol, timeout_keep_alive=keep_alive_s,
                          limit_concurrency=max_connections, log_level=log_level,
                          h11_max_incomplete_event_size=int(max_header_bytes))


def listen(host: str = "127.0.0.1", port: int = 8000):
    """A TCP socket bound to ``host:port`` (what uvicorn would bind), or an OSError saying in one line
    why not (port out of range, in use, an address that is not this machine's)."""
    import socket

    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port} is out of range: a TCP port is 0 to 65535")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart reuses the port at once
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = "the port is in use (another server runs there?)" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise OSError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def serve(app, host: str = "127.0.0.1", port: int = 8000, sock=None, **limits) -> None:
    """Serve ``app`` until interrupted, with the limits of :func:`server_config` (on ``sock`` when
    given: a socket from :func:`listen`)."""
    import gc
    import sys

    import uvicorn

    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # Everything loaded so far (index, model, libraries: ~300k objects) lives as long as the
    # server: frozen, the garbage collector no longer walks it; a full collection took ~200 ms,
    # stalling every request in flight.
    gc.collect()
    gc.freeze()
    server = uvicorn.Server(server_config(app, host, port, **limits))
    if sock is None:
        server.run()  # uvicorn binds host:port itself
    else:
        server.run(sockets=[sock])
