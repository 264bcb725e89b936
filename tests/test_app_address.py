"""Where `streamlit run app.py` listens: this machine only by default, as `aiic serve`."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from conftest import ROOT


def listening_addresses(port: int) -> set[str]:
    return {
        connection.laddr.ip
        for connection in psutil.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def served_addresses(tmp_path, *arguments: str, **env: str) -> set[str]:
    """The addresses `streamlit run app.py` (from the project's folder, so with its
    .streamlit/config.toml) listens on, with `arguments` and the variables `env`."""
    port = free_port()
    variables = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py")]
    command += ["--server.port", str(port), "--server.headless", "true", *arguments]
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**variables, "AIIC_MODEL_DIR": str(tmp_path), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (addresses := listening_addresses(port)):
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail(f"streamlit did not start: {server.communicate()[0]}")
            time.sleep(0.2)
        host = next(iter(addresses))
        with urllib.request.urlopen(f"http://{host}:{port}/_stcore/health", timeout=10) as answer:
            assert answer.status == 200
        return addresses
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's socket table")
def test_the_app_listens_on_loopback_by_default_and_elsewhere_when_told(tmp_path):
    assert served_addresses(tmp_path) == {"127.0.0.1"}
    # another loopback address, so that the test opens nothing to the network
    assert served_addresses(tmp_path, STREAMLIT_SERVER_ADDRESS="127.0.0.2") == {"127.0.0.2"}
