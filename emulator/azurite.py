"""Start and stop a real Azurite (the Azure Storage emulator from npm) on free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Azurite's well-known development account (public, documented; not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
REPO_ROOT = Path(__file__).resolve().parent.parent


class AzuriteUnavailableError(RuntimeError):
    """Azurite is not installed here (run `npm ci` in the repository root)."""


class AzuriteStartError(RuntimeError):
    """Azurite is installed but did not come up."""


@dataclass
class Azurite:
    process: subprocess.Popen[bytes]
    blob_port: int
    queue_port: int
    table_port: int
    workdir: str

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{ACCOUNT};"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            # Azurite's graceful shutdown waits for idle keep-alive connections; its storage is
            # in memory, so there is nothing to lose by not waiting long.
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def find_azurite() -> str:
    """The repo's pinned Azurite (node_modules), else one on PATH."""
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found:
        return found
    raise AzuriteUnavailableError(
        "Azurite not found: run `npm ci` in the repository root (needs Node.js and npm)"
    )


def start_azurite(*, timeout: float = 30.0) -> Azurite:
    """Start Azurite with in-memory storage on three free ports; wait until it answers.

    Its working directory is a fresh temporary folder, removed by `stop()`.
    """
    executable = find_azurite()
    ports = [_free_port() for _ in range(3)]
    workdir = tempfile.mkdtemp(prefix="azurite-")
    command = [
        executable, "--silent", "--inMemoryPersistence", "--skipApiVersionCheck", "--disableProductStyleUrl",
        "--blobHost", "127.0.0.1", "--blobPort", str(ports[0]),
        "--queueHost", "127.0.0.1", "--queuePort", str(ports[1]),
        "--tableHost", "127.0.0.1", "--tablePort", str(ports[2]),
    ]
    log = open(os.path.join(workdir, "azurite.log"), "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    azurite = Azurite(process, ports[0], ports[1], ports[2], workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = Path(workdir, "azurite.log").read_text(errors="replace")[-2000:]
            azurite.stop()
            raise AzuriteStartError(f"Azurite exited with code {process.returncode}: {output}")
        if all(_listening(port) for port in ports):
            return azurite
        time.sleep(0.1)
    azurite.stop()
    raise AzuriteStartError(f"Azurite did not start listening within {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
