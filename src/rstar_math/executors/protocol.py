"""Wire format shared by the executor, its sandbox workers and their forked state holders.

Messages are length-prefixed JSON over Unix stream sockets. JSON rather than pickle because
every byte that comes *back* from a sandbox process may have been written by code that escaped
the Python-level policy: parsing it must never execute anything. Sizes are capped on receipt
for the same reason.

This module is also loaded inside the workers outside the ``rstar_math`` package (see
``sandbox.py``), so it imports only the standard library.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import struct
from collections.abc import Sequence
from typing import Any

__all__ = [
    "ROOT_KEY",
    "ProtocolError",
    "chain_keys",
    "child_key",
    "recv_msg",
    "recv_msg_with_fd",
    "send_msg",
]

_HEADER = struct.Struct("!I")

#: Key of the empty context (the pristine interpreter state).
ROOT_KEY = "root"


class ProtocolError(RuntimeError):
    """A peer sent something that is not a well-formed message."""


def child_key(parent: str, block: str) -> str:
    """Key of the state reached by running ``block`` on the state ``parent``.

    A hash chain, so the key of a prefix is computed once and each longer prefix costs one
    hash of its own last block.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(parent.encode("ascii"))
    digest.update(b"\x00")
    digest.update(block.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def chain_keys(blocks: Sequence[str]) -> list[str]:
    """Keys of every prefix of ``blocks``: ``keys[i]`` is the state after ``blocks[:i]``."""
    keys = [ROOT_KEY]
    for block in blocks:
        keys.append(child_key(keys[-1], block))
    return keys


def _encode(obj: Any) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode("ascii")
    return _HEADER.pack(len(data)) + data


def send_msg(sock: socket.socket, obj: Any, fds: Sequence[int] = ()) -> None:
    """Send one message, optionally passing file descriptors along (``SCM_RIGHTS``)."""
    payload = _encode(obj)
    if fds:
        sent = socket.send_fds(sock, [payload], list(fds))
        if sent < len(payload):
            sock.sendall(payload[sent:])
    else:
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = n
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _decode(sock: socket.socket, header: bytes, max_bytes: int) -> Any:
    (size,) = _HEADER.unpack(header)
    if size > max_bytes:
        raise ProtocolError(f"message of {size} bytes exceeds the limit of {max_bytes}")
    data = _recv_exact(sock, size)
    if data is None:
        return None
    try:
        return json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"malformed message: {exc}") from exc


def recv_msg(sock: socket.socket, max_bytes: int = 64 << 20) -> Any:
    """Receive one message; ``None`` on a clean end of stream."""
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    return _decode(sock, header, max_bytes)


def recv_msg_with_fd(sock: socket.socket, max_bytes: int = 1 << 16) -> tuple[Any, int | None]:
    """Receive one message that may carry one file descriptor; ``(None, None)`` at EOF."""
    data, fds, _flags, _addr = socket.recv_fds(sock, _HEADER.size, 4)
    fd = fds[0] if fds else None
    for extra in fds[1:]:
        _close_quietly(extra)
    if not data:
        if fd is not None:
            _close_quietly(fd)
        return None, None
    if len(data) < _HEADER.size:
        rest = _recv_exact(sock, _HEADER.size - len(data))
        if rest is None:
            if fd is not None:
                _close_quietly(fd)
            return None, None
        data += rest
    try:
        return _decode(sock, data, max_bytes), fd
    except ProtocolError:
        if fd is not None:
            _close_quietly(fd)
        raise


def _close_quietly(fd: int) -> None:
    import os

    with contextlib.suppress(OSError):
        os.close(fd)
