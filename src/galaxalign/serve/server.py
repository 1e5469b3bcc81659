"""Running the search app under uvicorn, with limits that keep stalled or excess clients from
holding the server: a deadline for each request's headers, a keep-alive timeout and a cap on
concurrent connections.
"""
from __future__ import annotations

# OUR CHOICE: a client has 10 s from connecting (or from the end of its previous response) to
# send a request's headers; an idle keep-alive connection is closed after 5 s; beyond 256
# concurrent connections or requests uvicorn answers 503 instead of queueing without bound.
HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5
MAX_CONNECTIONS = 256
# OUR CHOICE: the serving process hands the GIL over every 0.5 ms (Python's default: 5 ms), so a
# thread-pool job (a thumbnail, a forward pass) cannot hold up the event loop's answers for long.
SWITCH_INTERVAL_S = 0.0005


def http_implementation() -> str:
    """``httptools`` (uvicorn's C parser: a good part less CPU per request than pure-Python h11)
    where it is installed, else ``h11``."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


class _HeaderDeadline:
    """Mixin for a uvicorn HTTP protocol: close a connection whose next request's headers do not
    arrive within ``deadline_s`` of its start (or of the end of its last response). Subclasses say
    when headers are complete (:meth:`_disarm`) and may refine :meth:`_still_waiting`."""

    deadline_s = HEADER_TIMEOUT_S
    _deadline = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.deadline_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _still_waiting(self) -> bool:
        return True

    def _expire(self) -> None:
        self._deadline = None
        if self._still_waiting() and not self.transport.is_closing():
            self.transport.close()  # no request's headers arrived in time

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)


def header_timeout_protocol(timeout_s: float = HEADER_TIMEOUT_S, http: str = "auto"):
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
                self._disarm()  # the deadline is met
                super().on_headers_complete()

            def on_response_complete(self) -> None:
                pipelined = bool(self.pipeline)  # a request already read: its headers came in time
                super().on_response_complete()
                if not pipelined and not self.transport.is_closing():
                    self._arm()

        return HttpToolsHeaderTimeoutProtocol
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
                self._disarm()  # a request's headers arrived: the deadline is met

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

    return HeaderTimeoutProtocol


def server_config(app, host: str = "127.0.0.1", port: int = 8000, *, header_timeout_s: float = HEADER_TIMEOUT_S,
                  keep_alive_s: int = KEEP_ALIVE_S, max_connections: int = MAX_CONNECTIONS, log_level: str = "warning",
                  http: str = "auto"):
    """The uvicorn ``Config`` that ``galaxalign serve`` runs ``app`` with."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, http=header_timeout_protocol(header_timeout_s, http),
                          timeout_keep_alive=keep_alive_s, limit_concurrency=max_connections, log_level=log_level)


def serve(app, host: str = "127.0.0.1", port: int = 8000, **limits) -> None:
    """Serve ``app`` until interrupted, with the limits of :func:`server_config`."""
    import gc
    import sys

    import uvicorn

    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # Everything loaded so far (index, model, libraries: ~300k objects) lives as long as the
    # server: frozen, the garbage collector no longer walks it; a full collection took ~200 ms,
    # stalling every request in flight.
    gc.collect()
    gc.freeze()
    uvicorn.Server(server_config(app, host, port, **limits)).run()
