"""The payment sandbox (`caas_sim.payments`) as a real HTTP server in a process of its own, for
the benchmarks that pay: the provider is not on the platform's machine.

This module imports little, so the sandbox's process starts fast even on a busy machine; a
sandbox that does not answer in time is reported with the end of what it printed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import httpx
from fastapi import FastAPI

SANDBOX_KEY = "bench-sandbox-key"
START_SECONDS = 300.0  # a machine shared with test suites imports slowly


class SandboxDidNotStart(RuntimeError):
    pass


def sandbox_app() -> FastAPI:
    """The sandbox as `uvicorn --factory` builds it in the sandbox's process."""
    from caas_sim import payments

    return payments.create_app(
        api_key=os.environ.get("CAAS_BENCH_SANDBOX_KEY", SANDBOX_KEY),
        webhook_url=None,
        webhook_secret="bench",
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running_sandbox(start_seconds: float = START_SECONDS) -> Iterator[str]:
    """The sandbox served by uvicorn in a child process; its base URL once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "caas.bench.sandbox:sandbox_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command += ["--no-access-log"]
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_seconds
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    said = output.read().decode(errors="replace").strip()[-300:]
                    raise SandboxDidNotStart(f"the payment sandbox did not start: {said}")
                time.sleep(0.1)  # real concurrency with another process, not a schedule
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
