"""Servers started by signpose and its tests get their port without a race.

A port chosen free, closed, then passed to a server can be taken by another process before the server
binds it. ``MlflowServer.start`` therefore asks for port 0 (the kernel picks one when the server binds)
and reads the port back from the kernel's socket table for the server's own process tree
(``listening_ports``); a server started on a given port is waited for until *it* listens there, so
another process answering on that port is never mistaken for it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request

import pytest

from signpose.tracking.server import listening_ports, wait_until_listening

GUARD_S = 120  # a hang guard only


def http_server(port: int, log_path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=log_path.parent)


@pytest.fixture
def stopped_at_end():
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        process.kill()
        process.wait()


def test_a_server_asked_for_port_0_is_found_on_the_port_the_kernel_gave_it(tmp_path, stopped_at_end):
    server = http_server(0, tmp_path / "server.log")
    stopped_at_end.append(server)
    port = wait_until_listening(server, timeout_s=GUARD_S, log_path=tmp_path / "server.log")
    assert port > 0 and listening_ports(server) == [port]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=GUARD_S) as response:
        assert response.status == 200


def test_another_process_listening_is_never_taken_for_the_server(tmp_path, stopped_at_end):
    with socket.socket() as other:  # this test process listens too: not the server's socket
        other.bind(("127.0.0.1", 0))
        other.listen()
        server = http_server(0, tmp_path / "server.log")
        stopped_at_end.append(server)
        port = wait_until_listening(server, timeout_s=GUARD_S, log_path=tmp_path / "server.log")
        assert other.getsockname()[1] not in listening_ports(server)
        assert port != other.getsockname()[1]


def test_a_server_whose_port_was_taken_fails_at_once_with_its_log(tmp_path, stopped_at_end):
    with socket.socket() as taker:
        taker.bind(("127.0.0.1", 0))
        taker.listen()
        server = http_server(taker.getsockname()[1], tmp_path / "server.log")
        stopped_at_end.append(server)
        with pytest.raises(RuntimeError, match="(?i)address already in use"):
            wait_until_listening(server, taker.getsockname()[1], timeout_s=GUARD_S, log_path=tmp_path / "server.log")
