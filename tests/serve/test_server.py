"""The listening socket of ``bitseek serve``: what the kernel and the event loop make of it."""

from __future__ import annotations

import asyncio
import socket

from bitseek.serve.server import bind


def test_accepted_connections_have_nodelay() -> None:
    """Without TCP_NODELAY every keep-alive response waits for the client's delayed ACK (~40 ms)."""
    sock = bind("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP
    port = sock.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        got = asyncio.Event()

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                s = transport.get_extra_info("socket")
                seen.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                got.set()

        server = await asyncio.get_running_loop().create_server(Proto, sock=sock)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.wait_for(got.wait(), 10)
            writer.close()
        finally:
            server.close()

    asyncio.run(main())
    assert seen and seen[0] != 0
