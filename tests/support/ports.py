"""TCP ports on 127.0.0.1: one free to listen on, one where nothing ever listens."""

from __future__ import annotations

import atexit
import functools
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now, for a server the test is about to start.

    The kernel picks it; another process could take it before the test binds it, a race
    too small to matter on a test machine (servers that can bind port 0 themselves should).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port that refuses connections for the whole test session.

    The port is bound but never listened on, so connecting is refused at once and no
    server started later can take it: "nothing listens there" stays true, unlike a
    :func:`free_port` that some later test may bind.
    """
    return _reserved().getsockname()[1]


@functools.cache
def _reserved() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    atexit.register(s.close)
    return s
