"""OPC UA server of a running daemon (in-process), read by a real asyncua client over loopback TCP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography.x509.oid import ExtendedKeyUsageOID

from inspectd.config.load import load_config
from inspectd.daemon import Daemon, Options
from inspectd.outputs.opcua import check_password, hash_password
from tests.conftest import write_station
from tests.ports import free_port

pytestmark = pytest.mark.slow

NS = "urn:inspectd"
VARIABLES = {"PartsTotal", "RejectsTotal", "FailsafesTotal", "LastVerdict", "LastPartId", "LastScore",
             "ActiveRecipe", "ActiveRecipeNo", "Ready", "Online", "LastReason"}


def _start(tmp_path: Path, opcua: dict) -> tuple[Daemon, threading.Thread, str]:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/inspectd/"
    station = write_station(tmp_path, {"name": "line2", "camera": {"bank": 4, "rate_hz": 50},
                                       "log": {"every_part": False},
                                       "opcua": {"endpoint": endpoint, "pki_dir": str(tmp_path / "pki"), **opcua}})
    b = yaml.safe_load((tmp_path / "products" / "disc-a.yaml").read_text())
    b.update(name="disc-b", plc_id=2)
    (tmp_path / "products" / "disc-b.yaml").write_text(yaml.safe_dump(b))
    d = Daemon(load_config(station), Options(handle_signals=False))
    t = threading.Thread(target=d.run)
    t.start()
    end = time.monotonic() + 90
    while not (d.plant and d.plant.opcua and d.plant.opcua.listening.is_set()) and time.monotonic() < end:
        assert t.is_alive()
        time.sleep(0.05)
    assert d.plant and d.plant.opcua and d.plant.opcua.listening.is_set(), d.plant and d.plant.opcua.failed
    return d, t, endpoint


def _stop(d: Daemon, t: threading.Thread) -> None:
    d.request_stop()
    t.join(60)
    assert not t.is_alive()


async def _station_vars(client: Client) -> dict[str, object]:
    ns = await client.get_namespace_index(NS)
    station = await client.nodes.objects.get_child(f"{ns}:line2")
    return {(await n.read_browse_name()).Name: n for n in await station.get_children()}


class _Changes:
    def __init__(self) -> None:
        self.values: list[int] = []

    def datachange_notification(self, node: object, val: int, data: object) -> None:
        self.values.append(val)


def test_browse_read_subscribe_and_read_only_without_security_on_loopback(tmp_path: Path) -> None:
    d, t, endpoint = _start(tmp_path, {"security": ["none"]})

    async def session() -> None:
        client = Client(endpoint, timeout=10)
        await client.connect()
        try:
            await checks(client)
        finally:
            with contextlib.suppress(Exception):  # the daemon stopped its server under this session on purpose
                await client.disconnect()

    async def checks(client: Client) -> None:
        nodes = await _station_vars(client)
        assert set(nodes) == VARIABLES  # no SelectRecipe method unless enabled
        assert await nodes["ActiveRecipe"].read_value() == "disc-a"
        assert await nodes["ActiveRecipeNo"].read_value() == 1
        assert await nodes["Online"].read_value() is True
        changes = _Changes()
        sub = await client.create_subscription(50, changes)
        await sub.subscribe_data_change(nodes["PartsTotal"])
        end = time.monotonic() + 30
        while len(set(changes.values)) < 3 and time.monotonic() < end:
            await asyncio.sleep(0.1)
        assert len(set(changes.values)) >= 3 and changes.values == sorted(changes.values), changes.values
        assert await nodes["LastVerdict"].read_value() in {"pass", "reject", "failsafe"}
        assert await nodes["LastPartId"].read_value() > 0
        assert 0.0 <= await nodes["LastScore"].read_value() <= 1.0
        with pytest.raises(ua.UaStatusCodeError):  # read-only to clients
            await nodes["PartsTotal"].write_value(ua.Variant(0, ua.VariantType.UInt64))
        # A stop writes Online = False before the server closes: a subscriber sees the station go.
        online = _Changes()
        await (await client.create_subscription(50, online)).subscribe_data_change(nodes["Online"])
        stopper = threading.Thread(target=_stop, args=(d, t))
        stopper.start()
        end = time.monotonic() + 60
        while False not in online.values and time.monotonic() < end:
            await asyncio.sleep(0.05)
        assert online.values[:1] == [True] and False in online.values, online.values
        stopper.join(60)

    try:
        asyncio.run(session())
    finally:
        if t.is_alive():
            _stop(d, t)


def test_security_refuses_unauthenticated_clients_and_recipe_select_needs_a_user(tmp_path: Path) -> None:
    d, t, endpoint = _start(tmp_path, {
        "security": ["Basic256Sha256_SignAndEncrypt"], "recipe_select": True,
        "users": [{"name": "mes", "password_hash": hash_password("s3cret", iterations=1000)}]})
    cert, key = tmp_path / "client-cert.der", tmp_path / "client-key.pem"
    client_uri = "urn:inspectd:test-client"

    def secure_client(user: str | None, password: str | None) -> Client:
        c = Client(endpoint, timeout=10)
        c.application_uri = client_uri
        if user:
            c.set_user(user)
        if password:
            c.set_password(password)
        return c

    async def session() -> None:
        await setup_self_signed_certificate(key, cert, client_uri, socket.gethostname(),
                                            [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "test client"})
        # 1. No security at all: the server offers no such endpoint, only encrypted ones.
        endpoints = await Client(endpoint, timeout=5).connect_and_get_server_endpoints()
        assert {e.SecurityMode for e in endpoints} == {ua.MessageSecurityMode.SignAndEncrypt}
        with pytest.raises(ua.UaError, match="No matching endpoints"):
            async with Client(endpoint, timeout=5) as plain:
                await plain.nodes.objects.get_children()
        # 2. Encrypted channel but anonymous, 3. wrong password: the session is refused.
        for user, password, why in ((None, None, "BadIdentityTokenRejected"), ("mes", "wrong", "BadUserAccessDenied")):
            c = secure_client(user, password)
            await c.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key))
            with pytest.raises(ua.UaStatusCodeError, match=why):
                async with c:
                    await c.nodes.objects.get_children()
        # 4. The user: reads, and may select a recipe (applied between parts, PLC-style).
        c = secure_client("mes", "s3cret")
        await c.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key))
        async with c:
            nodes = await _station_vars(c)
            assert set(nodes) == VARIABLES | {"SelectRecipe"}
            station = await nodes["PartsTotal"].get_parent()
            ns = await c.get_namespace_index(NS)
            assert await station.call_method(f"{ns}:SelectRecipe", ua.Variant(99, ua.VariantType.UInt16)) is False
            assert await station.call_method(f"{ns}:SelectRecipe", ua.Variant(2, ua.VariantType.UInt16)) is True
            end = time.monotonic() + 20
            while await nodes["ActiveRecipe"].read_value() != "disc-b" and time.monotonic() < end:
                await asyncio.sleep(0.1)
            assert await nodes["ActiveRecipe"].read_value() == "disc-b"
            assert await nodes["ActiveRecipeNo"].read_value() == 2

    try:
        asyncio.run(session())
        assert d.pipeline is not None and d.pipeline.active.name == "disc-b"
    finally:
        _stop(d, t)


def test_password_hash_round_trip() -> None:
    h = hash_password("pw", iterations=1000)
    assert check_password("pw", h) and not check_password("pW", h)


def test_trusted_clients_refuses_a_certificate_not_in_the_folder(tmp_path: Path) -> None:
    async def make(name: str) -> tuple[Path, Path]:
        cert, key = tmp_path / f"{name}.der", tmp_path / f"{name}.pem"
        await setup_self_signed_certificate(key, cert, f"urn:inspectd:{name}", socket.gethostname(),
                                            [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": name})
        return cert, key

    known, stranger = asyncio.run(make("known")), asyncio.run(make("stranger"))
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "known.der").write_bytes(known[0].read_bytes())
    d, t, endpoint = _start(tmp_path, {"security": ["Basic256Sha256_SignAndEncrypt"],
                                       "trusted_clients": str(tmp_path / "trusted")})

    async def connect(name: str, cert: Path, key: Path) -> int:
        c = Client(endpoint, timeout=10)
        c.application_uri = f"urn:inspectd:{name}"
        await c.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key))
        async with c:
            return len(await c.nodes.objects.get_children())

    try:
        assert asyncio.run(connect("known", *known)) > 0
        with pytest.raises(ua.UaStatusCodeError, match="BadCertificateUntrusted"):
            asyncio.run(connect("stranger", *stranger))
    finally:
        _stop(d, t)
