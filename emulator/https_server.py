"""Serve the emulator over real sockets: ARM over HTTPS on loopback, the managed-identity token
endpoint over HTTP, as a deployed app meets them.

With this the app runs with no injected transport at all: its default requests-based transport,
TLS verification (the self-signed certificate is trusted through `REQUESTS_CA_BUNDLE`) and
`DefaultAzureCredential` reading `IDENTITY_ENDPOINT` / `IDENTITY_HEADER`. A dropped connection
(AzureEmulator.fail mode reset, refused, lost-answer) closes the socket without a response.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import struct
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .messages import ArmRequest, DroppedConnection
from .service import AzureEmulator


@dataclass
class LoopbackEndpoints:
    arm_endpoint: str  # https://127.0.0.1:<port>
    identity_endpoint: str  # http://127.0.0.1:<port>/msi/token
    ca_bundle: str  # PEM file to trust (REQUESTS_CA_BUNDLE)
    _servers: tuple[ThreadingHTTPServer, ...]
    _workdir: str

    def environment(self, identity_header: str = "loopback-identity-header") -> dict[str, str]:
        """The variables a deployed app would have, pointing here."""
        return {
            "AZURE_RESOURCE_MANAGER_ENDPOINT": self.arm_endpoint,
            "IDENTITY_ENDPOINT": self.identity_endpoint,
            "IDENTITY_HEADER": identity_header,
            "REQUESTS_CA_BUNDLE": self.ca_bundle,
        }

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        shutil.rmtree(self._workdir, ignore_errors=True)


class _Server(ThreadingHTTPServer):
    # A thread per connection; a listen backlog for a fleet's worth of clients connecting at once
    # (socketserver's 5 would drop SYNs, and each dropped one costs the client a second).
    request_queue_size = 512
    daemon_threads = True


def serve_on_loopback(emulator: AzureEmulator) -> LoopbackEndpoints:
    """Start both servers on free loopback ports (daemon threads); `close()` stops them."""
    workdir = tempfile.mkdtemp(prefix="emulator-tls-")
    cert_path, key_path = self_signed_certificate(workdir)
    handler = _handler_for(emulator)

    arm = _Server(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    arm.socket = context.wrap_socket(arm.socket, server_side=True)
    identity = _Server(("127.0.0.1", 0), handler)
    for server in (arm, identity):
        threading.Thread(target=server.serve_forever, daemon=True, name="emulator-http").start()
    return LoopbackEndpoints(
        arm_endpoint=f"https://127.0.0.1:{arm.server_address[1]}",
        identity_endpoint=f"http://127.0.0.1:{identity.server_address[1]}/msi/token",
        ca_bundle=cert_path,
        _servers=(arm, identity),
        _workdir=workdir,
    )


def _handler_for(emulator: AzureEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
            request = ArmRequest(
                method=self.command.upper(),
                url=f"{scheme}://{self.headers.get('Host', '127.0.0.1')}{self.path}",
                path=unquote(parts.path),
                query={k.lower(): v for k, v in parse_qsl(parts.query, keep_blank_values=True)},
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            try:
                reply = emulator.serve(request)
            except DroppedConnection:
                self._drop()
                return
            content = reply.content()
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if content and not any(k.lower() == "content-type" for k in reply.headers):
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def _drop(self) -> None:
            # Close without a response; linger 0 makes it a TCP reset, as a broken connection is. A
            # refused connection cannot be simulated on an accepted socket: it is reset too.
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # the socket only really closes once its file is closed too
            self.connection.close()

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
            return None

    return Handler


def self_signed_certificate(directory: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emulator.loopback")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "emulator-ca.pem")
    key_path = os.path.join(directory, "emulator-key.pem")
    with open(cert_path, "wb") as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return cert_path, key_path
