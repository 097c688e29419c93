"""Run the app on uvicorn over a socket bound here, so the real address (port 0 = any free port) is known
before the first request and a taken port is a one-line error, not a traceback."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from typing import Any

from bitseek.errors import BitseekError

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); errors name the flag to change."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise BitseekError(f"--host {host}: cannot resolve ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted connections only when the socket's
    # proto is IPPROTO_TCP, and without it every keep-alive response waits ~40 ms for a delayed ACK
    # (Nagle: uvicorn writes the head and the body separately). The listener's own flag is inherited
    # by accepted sockets on Linux, for event loops that do not set it.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise BitseekError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); "
                           "pick another --port (0 = any free port)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(collection: Any, settings: Any, host: str = "127.0.0.1", port: int = 8000, access_log: bool = True,
          on_shutdown: Any = None, sock: socket.socket | None = None) -> None:
    """Serve ``collection`` until interrupted (on ``sock`` if given, else bound to host:port here).

    Prints the URL once listening (stdout, flushed), so a parent process can read the real port.
    """
    import uvicorn

    from bitseek.serve.app import build_app

    if not is_loopback(host) and settings.token is None:
        log.warning("serving on %s without a token: anyone who reaches this address can search the collection "
                    "(give --token, or BITSEEK_SERVE_TOKEN)", host)
    if sock is None:
        sock = bind(host, port)
    real_host, real_port = sock.getsockname()[:2]
    app = build_app(collection, settings, on_shutdown=on_shutdown)
    shown = f"[{real_host}]" if ":" in real_host else real_host
    print(f"serving {len(collection)} items at http://{shown}:{real_port}/ (API docs at /docs); Ctrl-C stops",
          flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=access_log, timeout_graceful_shutdown=5,
                            lifespan="on", limit_concurrency=None)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()
