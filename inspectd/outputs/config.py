"""Station sections for the plant-side outputs: `mqtt:` and `opcua:` (both off unless configured)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, model_validator

from inspectd.config.base import Model


class MqttTls(Model):
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate (PEM); "
                                 "null: the system's trust store")
    cert_file: Path | None = Field(None, description="client certificate (PEM) when the broker wants one")
    key_file: Path | None = Field(None, description="client private key (PEM) for cert_file")
    insecure: bool = Field(False, description="skip the broker host name check (test rigs only, never in a plant)")

    @model_validator(mode="after")
    def _pair(self) -> MqttTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file: a client certificate needs its key_file (and the other way round)")
        return self


class SparkplugConfig(Model):
    """Sparkplug B edge node beside the JSON topics (its own MQTT session: NDEATH is that session's Will)."""

    group_id: str = Field("inspectd", min_length=1, pattern=r"^[^/#+]+$", description="Sparkplug group id")
    edge_node: str | None = Field(None, pattern=r"^[^/#+]+$", description="edge node id; null: the station name")
    device: str = Field("inspection", min_length=1, pattern=r"^[^/#+]+$", description="device id of the metrics")
    update_ms: float = Field(500, gt=0, le=60_000, description="DDATA with the metrics that changed, this often")


class MqttConfig(Model):
    """Verdicts, station state and counters to the plant's MQTT broker, store-and-forward from the journal."""

    enabled: bool = Field(True, description="publish to the broker (false keeps the section but sends nothing)")
    host: str = Field(..., min_length=1, description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (1883 plain, 8883 TLS by convention)")
    topic_prefix: str = Field("inspectd", min_length=1, description="topics are <prefix>/<station>/...")
    qos: Literal[0, 1] = Field(1, description="1: at least once (duplicates possible, loss not); 0: at most once")
    client_id: str | None = Field(None, description="MQTT client id; null: inspectd-<station>")
    username: str | None = Field(None, description="broker user name")
    password_file: Path | None = Field(None, description="file holding the broker password (kept out of the "
                                       "station file; e.g. a systemd credential)")
    tls: MqttTls | None = Field(None, description="TLS to the broker; null: plain TCP")
    keepalive_s: int = Field(10, ge=2, le=3600, description="MQTT keep-alive; the broker publishes the Last Will "
                             "after 1.5x this without a packet")
    counters_every_s: float = Field(5.0, gt=0, description="period of the retained counters message")
    cursor_path: Path | None = Field(None, description="where the last journal row the broker acknowledged is "
                                     "kept; null: beside the journal (<journal>.mqtt-cursor)")
    max_inflight: int = Field(100, ge=1, le=65535, description="QoS 1 messages sent but not yet acknowledged")
    batch: int = Field(500, ge=1, le=100_000, description="journal rows read per query")
    poll_ms: float = Field(20, gt=0, le=10_000, description="how often the journal is read for new rows")
    sparkplug: SparkplugConfig | None = Field(None, description="also publish Sparkplug B (NBIRTH/DBIRTH/DDATA/"
                                              "NDEATH) for SCADA hosts; null: off")
    drain_s: float = Field(5.0, ge=0, le=600, description="at stop, time allowed to send the backlog before "
                           "leaving it for the next start (nothing is lost either way)")

    @property
    def password(self) -> str | None:
        return self.password_file.read_text().strip() if self.password_file else None


OpcuaSecurity = Literal["Basic256Sha256_SignAndEncrypt", "Basic256Sha256_Sign", "none"]


def _secure_only() -> list[OpcuaSecurity]:
    return ["Basic256Sha256_SignAndEncrypt"]


class OpcuaUser(Model):
    name: str = Field(..., min_length=1, description="OPC UA user name")
    password_hash: str = Field(..., pattern=r"^pbkdf2_sha256\$\d+\$[0-9a-f]+\$[0-9a-f]+$",
                               description="pbkdf2_sha256$iterations$salt$hash, made by "
                               "`python -m inspectd.outputs.opcua hash-password`")


class OpcuaConfig(Model):
    """An OPC UA server with one object per station: counters and the last verdict for MES/SCADA to read."""

    enabled: bool = Field(True, description="serve OPC UA")
    endpoint: str = Field("opc.tcp://127.0.0.1:4840/inspectd/", description="opc.tcp://host:port/path to listen on")
    security: list[OpcuaSecurity] = Field(
        default_factory=_secure_only, min_length=1,
        description="security policies offered; 'none' only on a loopback endpoint")
    certificate: Path | None = Field(None, description="server certificate (DER or PEM); null: a self-signed one "
                                     "is made in pki_dir at first start")
    private_key: Path | None = Field(None, description="server private key (PEM) for certificate")
    pki_dir: Path = Field(Path("var/opcua-pki"), description="where a self-signed certificate is kept")
    trusted_clients: Path | None = Field(None, description="folder of client certificates allowed to connect "
                                         "(DER/PEM); null: any client certificate the policy accepts")
    users: list[OpcuaUser] = Field(default_factory=list, description="user name/password logins; when set, "
                                   "anonymous sessions are refused")
    recipe_select: bool = Field(False, description="expose the SelectRecipe(plc_id) method (needs users)")
    namespace: str = Field("urn:inspectd", description="namespace URI of the station objects")
    update_ms: float = Field(100, gt=0, le=10_000, description="how often variables are refreshed from the line")

    @model_validator(mode="after")
    def _safe(self) -> OpcuaConfig:
        url = urlparse(self.endpoint)
        if url.scheme != "opc.tcp" or not url.hostname or not url.port:
            raise ValueError(f"endpoint: must be opc.tcp://host:port/path (got {self.endpoint!r})")
        if "none" in self.security and not _loopback(url.hostname):
            raise ValueError(f"security: 'none' is allowed on a loopback endpoint only (endpoint host "
                             f"{url.hostname!r}); use Basic256Sha256_SignAndEncrypt")
        if self.recipe_select and not self.users:
            raise ValueError("recipe_select: needs users (recipe selection is never anonymous)")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate: needs private_key (and the other way round)")
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
