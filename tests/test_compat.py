"""The private torch entry points (compile_guard.compat), listed against the installed torch. In-process."""

from __future__ import annotations

import datetime
import socket

import torch
import torch.distributed as dist

from compile_guard import compat


def test_every_private_entry_point_resolves_on_the_installed_torch():
    missing = {}
    for path in compat.ENTRY_POINTS:
        try:
            compat.resolve(path)
        except (ImportError, AttributeError) as exc:
            missing[path] = f"{type(exc).__name__}: {exc}"
    assert not missing, f"torch {torch.__version__} lacks compat entry points (add a fallback or a floor): {missing}"


def test_a_store_cloned_or_reconnected_shares_the_servers_keys():
    """Store.clone on 2.8+, a new client of the same server before it: either way one key space."""
    server = dist.TCPStore("127.0.0.1", 0, 1, True, datetime.timedelta(seconds=10))
    other = compat.clone_store(server)
    other.set("k", "v")
    assert server.get("k") == b"v"


def test_the_listening_store_takes_over_a_bound_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    store = compat.listening_store(sock, 10.0)
    client = dist.TCPStore("127.0.0.1", port, None, False, datetime.timedelta(seconds=10))
    client.set("k", "v")
    assert store.get("k") == b"v"
