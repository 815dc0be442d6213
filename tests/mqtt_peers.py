"""A real Mosquitto on a free loopback port (own config, own persistence) and a recording MQTT subscriber.

The broker keeps sessions across its own restart (`persistence true`), and the subscriber keeps one
(clean_session=False, QoS 1), so what the publisher sends while the subscriber is still reconnecting is queued
for it, as for a real plant consumer; a loss the tests see is then the publisher's.
"""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.ports import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def need_mosquitto() -> None:
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto not installed: run `bash tools/ci-deps.sh` (Debian package mosquitto)")


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_test_ca(folder: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("inspectd test CA")).issuer_name(name("inspectd test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, usage: x509.ObjectIdentifier,
             san: list[x509.GeneralName]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(ca_key, hashes.SHA256()), key

    server, server_key = leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                              [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client, client_key = leaf("station-test", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(server.public_bytes(pem))
    (folder / "client.pem").write_bytes(client.public_bytes(pem))
    return TlsFiles(folder / "ca.pem", folder / "server.pem", write_key(server_key, folder / "server.key"),
                    folder / "client.pem", write_key(client_key, folder / "client.key"))


class Mosquitto:
    """mosquitto -c <own config>; stop() is SIGTERM (it saves its persistence file), start() again on the same port."""

    def __init__(self, folder: Path, tls: TlsFiles | None = None, users: dict[str, str] | None = None) -> None:
        need_mosquitto()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        # autosave every second: a broker killed with SIGKILL still comes back with the test subscriber's session
        lines = [f"user {getpass.getuser()}", "persistence true", f"persistence_location {folder}/",
                 "autosave_interval 1", "set_tcp_nodelay true", "queue_qos0_messages true",
                 "max_queued_messages 1000000", "log_dest stderr", "log_type error", "log_type warning",
                 "log_type notice", "per_listener_settings true", f"listener {self.port} 127.0.0.1",
                 "allow_anonymous true"]
        if tls:
            # The TLS listener wants a client certificate signed by the test CA and, with `users`, a password.
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {tls.ca}", f"certfile {tls.server_cert}",
                      f"keyfile {tls.server_key}", "require_certificate true"]
            if users:
                pw = folder / "passwd"
                pw.write_text("")
                for name, password in users.items():
                    subprocess.run([shutil.which("mosquitto_passwd") or "mosquitto_passwd", "-b", str(pw), name,
                                    password], check=True, capture_output=True)
                lines += ["allow_anonymous false", f"password_file {pw}"]
            else:
                lines += ["allow_anonymous true"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> Mosquitto:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto not listening on {self.port}: {self.log.read_text()[-2000:]}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no goodbye, nothing saved beyond the last autosave; works on a stopped (SIGSTOP) broker too."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class Recorder:
    """Subscribes (QoS 1, persistent session) to `<prefix>/#` and keeps every message with its arrival time."""

    def __init__(self, port: int, topic: str = "inspectd/#", tls: TlsFiles | None = None) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"recorder-{uuid.uuid4().hex[:8]}",
                                  clean_session=False, protocol=paho.MQTTv311)
        if tls:
            self.client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
        self.client.reconnect_delay_set(0.2, 1)
        self.topic = topic
        self.messages: list[tuple[float, str, bytes, bool]] = []  # (time.time(), topic, payload, retain)
        self._cv = threading.Condition()
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(self.topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._cv:
            self.messages.append((time.time(), msg.topic, msg.payload, bool(msg.retain)))
            self._cv.notify_all()

    def verdicts(self) -> list[dict]:
        with self._cv:
            return [json.loads(p) for _, t, p, _ in self.messages if t.endswith("/verdict")]

    def states(self) -> list[str]:
        with self._cv:
            return [p.decode() for _, t, p, _ in self.messages if t.endswith("/state")]

    def counters(self) -> list[dict]:
        with self._cv:
            return [json.loads(p) for _, t, p, _ in self.messages if t.endswith("/counters")]

    def wait(self, pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._cv:
            while not pred():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.2))
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
