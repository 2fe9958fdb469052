"""The MLflow image's uvicorn socket fix (docker/mlflow/uvicorn_tcp_nodelay.py), in this process."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from types import ModuleType

from tests.conftest import load_image_module

REPO = Path(__file__).resolve().parents[2]


def load_hook() -> ModuleType:
    return load_image_module("uvicorn_tcp_nodelay", "docker/mlflow/uvicorn_tcp_nodelay.py")


def nodelay_of_accepted(listener: socket.socket) -> int:
    """TCP_NODELAY of a connection accepted by asyncio from ``listener`` (what uvicorn's workers do)."""

    async def main() -> int:
        seen: list[int] = []

        def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connection, sock=listener)
        port = listener.getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        return seen[0]

    return asyncio.run(main())


def bound(proto: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)  # how uvicorn's supervisor binds
    sock.bind(("127.0.0.1", 0))
    return sock


def test_uvicorns_prebound_socket_loses_tcp_nodelay_and_the_hook_restores_it() -> None:
    # The bug: a listener created with protocol 0 hands asyncio sockets it never sets TCP_NODELAY on.
    assert nodelay_of_accepted(bound()) == 0
    hook = load_hook()
    fixed = hook._with_tcp_proto(bound())
    assert fixed.proto == socket.IPPROTO_TCP
    assert nodelay_of_accepted(fixed) != 0


def test_install_patches_uvicorn_once_and_leaves_correct_sockets_alone() -> None:
    from uvicorn.config import Config

    original = Config.bind_socket
    try:
        hook = load_hook()
        assert hook.install().filter(None) is True  # type: ignore[arg-type]
        config = Config("mlops_kit:__version__", host="127.0.0.1", port=0, workers=2)
        sock = config.bind_socket()
        assert sock.proto == socket.IPPROTO_TCP
        sock.close()
        already = bound(socket.IPPROTO_TCP)
        assert hook._with_tcp_proto(already) is already
        already.close()
    finally:
        Config.bind_socket = original  # type: ignore[method-assign]
