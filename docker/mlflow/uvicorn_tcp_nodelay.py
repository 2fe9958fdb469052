"""Give uvicorn's pre-bound listening socket the TCP protocol number, so replies are not delayed.

With ``--workers N`` (N > 1; ``mlflow server`` uses uvicorn's workers) the
uvicorn supervisor binds the listening socket itself with
``socket.socket(family)``: protocol number 0. Accepted connections inherit it,
and asyncio only sets TCP_NODELAY on sockets whose ``proto`` is IPPROTO_TCP. So
every response on a kept-alive connection waits for the client's delayed ACK:
about 40 ms per MLflow call (uvicorn issue 3149, open as of uvicorn 0.54).

The fix re-wraps the same file descriptor with ``proto=IPPROTO_TCP``. Nothing
else changes: same socket, same options, same workers. When uvicorn creates
the socket correctly itself (a fixed release), ``proto`` is already set and this
does nothing.

How it gets into uvicorn's supervisor process: MLflow starts uvicorn with our
``--log-config``, which uvicorn applies before it binds the socket; the config
names :func:`install` as a filter factory, so importing this module is the hook.
"""

from __future__ import annotations

import logging
import socket

_INSTALLED = False


def _with_tcp_proto(sock: socket.socket) -> socket.socket:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM and sock.proto == 0:
        return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    return sock


def install() -> logging.Filter:
    """Patch ``uvicorn.config.Config.bind_socket`` once; returns a filter that passes everything."""
    global _INSTALLED
    if not _INSTALLED:
        try:
            from uvicorn.config import Config
        except ImportError:  # not a uvicorn process
            return logging.Filter()
        original = Config.bind_socket

        def bind_socket(self: Config) -> socket.socket:
            return _with_tcp_proto(original(self))

        Config.bind_socket = bind_socket  # type: ignore[method-assign]
        _INSTALLED = True
    return logging.Filter()
