"""A read deadline for uvicorn's HTTP/1.1 protocol: the one guard against slow clients that uvicorn lacks.

uvicorn's own options cover the rest and the server uses them (`limit_concurrency` answers 503 past a number of
connections, `timeout_keep_alive` closes idle keep-alive connections, `h11_max_incomplete_event_size` caps the
header block), but nothing bounds the time a request takes to arrive: a client that connects and sends nothing,
or trickles one byte at a time, holds its socket forever (300 of them starved a server at 256 descriptors).
Here the whole request, headers and body, must arrive within `read_timeout_s` of the connection opening or of
the previous response; a client that misses it is answered 408 (if a request had begun) and disconnected.

A subclass of uvicorn's h11 protocol, passed as uvicorn's `http` option: a module-level class, because several
worker processes receive it by name, so it reads its deadline from the settings in the environment.
"""

from __future__ import annotations

import asyncio
import functools

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from rlc.reward_server.config import ServerConfig

_TIMEOUT_REPLY = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@functools.cache
def _read_timeout_s() -> float:
    return ServerConfig.from_env().read_timeout_s


class DeadlineH11Protocol(H11Protocol):
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):  # the request has arrived whole
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(_read_timeout_s(), self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.SEND_BODY:  # a body that stopped coming: answer, unless already answered
            answer = self.cycle is None or not self.cycle.response_started
        else:  # headers that stopped coming (none at all: an idle connection, closed without a word)
            answer = bool(self.conn.trailing_data[0])
        if answer:
            self.transport.write(_TIMEOUT_REPLY)
        self.transport.close()
