"""OPC UA server (asyncua): one object per station, its variables refreshed from the line, read-only by default.

Address space (namespace `opcua.namespace`, string node ids `<station>.<Variable>` so an MES can configure them):
  Objects/<station>/PartsTotal, RejectsTotal, FailsafesTotal (UInt64), LastVerdict (String), LastPartId (Int64),
  LastScore (Double), LastReason (String), ActiveRecipe (String), ActiveRecipeNo (UInt16), Ready, Online (Boolean)
  Objects/<station>/SelectRecipe(RecipeNo: UInt16) -> Accepted: Boolean   only with recipe_select (needs users)

The server runs its own asyncio loop on its own thread and reads the station's counters every update_ms; the cycle
never waits for it (its only hot-path hook is StationView.submit, one attribute store).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import structlog
from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.user_managers import UserManager
from cryptography.x509.oid import ExtendedKeyUsageOID

from inspectd.outputs.config import OpcuaConfig, OpcuaUser
from inspectd.outputs.station_view import Snapshot, StationView

log = structlog.get_logger("inspectd.opcua")

POLICIES = {
    "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "none": ua.SecurityPolicyType.NoSecurity,
}
PBKDF2_ITERATIONS = 200_000

# variable -> (OPC UA type, value from a snapshot)
VARIABLES: dict[str, tuple[ua.VariantType, Callable[[Snapshot], Any]]] = {
    "PartsTotal": (ua.VariantType.UInt64, lambda s: s.parts),
    "RejectsTotal": (ua.VariantType.UInt64, lambda s: s.rejects),
    "FailsafesTotal": (ua.VariantType.UInt64, lambda s: s.failsafes),
    "LastVerdict": (ua.VariantType.String, lambda s: s.last.outcome.value if s.last else ""),
    "LastPartId": (ua.VariantType.Int64, lambda s: s.last.part_id if s.last else -1),
    "LastScore": (ua.VariantType.Double, lambda s: float(s.last.score) if s.last else 0.0),
    "LastReason": (ua.VariantType.String, lambda s: s.last.reason if s.last else ""),
    "ActiveRecipe": (ua.VariantType.String, lambda s: s.product),
    "ActiveRecipeNo": (ua.VariantType.UInt16, lambda s: s.recipe_no),
    "Ready": (ua.VariantType.Boolean, lambda s: s.ready),
}


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), iterations).hex()
    return f"pbkdf2_sha256${iterations}${salt}${digest}"


def check_password(password: str, stored: str) -> bool:
    _, iterations, salt, digest = stored.split("$")
    got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations)).hex()
    return hmac.compare_digest(got, digest)


class PasswordUsers(UserManager):
    """User name + password from `opcua.users`; anything else (anonymous, unknown, wrong password) is refused."""

    def __init__(self, users: list[OpcuaUser]) -> None:
        self.users = {u.name: u.password_hash for u in users}

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        stored = self.users.get(username or "")
        if stored is None or password is None or not check_password(password, stored):
            log.warning("opcua_login_refused", user=username)
            return None
        return User(role=UserRole.User, name=username)


class OpcuaServer:
    def __init__(self, cfg: OpcuaConfig, station: str, view: StationView,
                 on_recipe: Callable[[int], bool] | None = None) -> None:
        self.cfg = cfg
        self.station = station
        self.view = view
        self.on_recipe = on_recipe
        self.listening = threading.Event()
        self.failed: str | None = None
        self.updates = 0
        self._online = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._thread_main, name="opcua", daemon=True)

    def start(self) -> None:
        """Returns at once: the server loads its address space and binds on its own thread (opcua_listening)."""
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._online = False
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    # -- server thread ----------------------------------------------------------------------------------
    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as e:  # a bind failure or a bad certificate: log it, the line keeps inspecting
            self.failed = str(e) or type(e).__name__
            log.error("opcua_failed", endpoint=self.cfg.endpoint, error=self.failed)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        cfg = self.cfg
        server = Server(user_manager=PasswordUsers(cfg.users) if cfg.users else None)
        await server.init()
        server.set_endpoint(cfg.endpoint)
        server.set_server_name(f"inspectd {self.station}")
        app_uri = f"urn:inspectd:{self.station}"
        await server.set_application_uri(app_uri)
        server.set_security_policy([POLICIES[p] for p in cfg.security])
        if cfg.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])  # no anonymous sessions
        if any(p != "none" for p in cfg.security):
            await self._load_certificate(server, app_uri)
        if cfg.trusted_clients is not None:
            store = TrustStore([cfg.trusted_clients], [])
            await store.load()
            server.set_certificate_validator(CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT, store))
        ns = await server.register_namespace(cfg.namespace)
        def node_id(name: str) -> str:
            return f"ns={ns};s={self.station}{'.' if name else ''}{name}"

        obj = await server.nodes.objects.add_object(node_id(""), f"{ns}:{self.station}")
        nodes = {}
        for name, (vtype, _) in VARIABLES.items():
            nodes[name] = await obj.add_variable(node_id(name), f"{ns}:{name}", ua.Variant(_initial(vtype), vtype))
        online = await obj.add_variable(node_id("Online"), f"{ns}:Online", ua.Variant(True, ua.VariantType.Boolean))
        if cfg.recipe_select:
            arg = ua.Argument(Name="RecipeNo", DataType=ua.NodeId.from_string(f"i={ua.ObjectIds.UInt16}"),
                              ValueRank=-1,
                              Description=ua.LocalizedText("plc_id of the product to inspect from the next part on"))
            out = ua.Argument(Name="Accepted", DataType=ua.NodeId.from_string(f"i={ua.ObjectIds.Boolean}"),
                              ValueRank=-1)
            await obj.add_method(node_id("SelectRecipe"), f"{ns}:SelectRecipe", self._select_recipe, [arg], [out])
        async with server:
            self.listening.set()
            log.info("opcua_listening", endpoint=cfg.endpoint, security=list(cfg.security), users=len(cfg.users),
                     recipe_select=cfg.recipe_select)
            last: dict[str, Any] = {}
            while not self._stop.is_set():
                snap = self.view.snapshot()
                for name, (vtype, value_of) in VARIABLES.items():
                    value = value_of(snap)
                    if last.get(name) != value:  # write only changes: subscriptions see real changes only
                        await nodes[name].write_value(ua.Variant(value, vtype))
                        last[name] = value
                self.updates += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), cfg.update_ms / 1e3)
            await online.write_value(ua.Variant(False, ua.VariantType.Boolean))
            await asyncio.sleep(0.2)  # let subscribers see Online = False before the sessions close

    async def _load_certificate(self, server: Server, app_uri: str) -> None:
        cfg = self.cfg
        if cfg.certificate is not None and cfg.private_key is not None:
            cert, key = cfg.certificate, cfg.private_key
        else:
            cfg.pki_dir.mkdir(parents=True, exist_ok=True)
            cert, key = cfg.pki_dir / "server-cert.der", cfg.pki_dir / "server-key.pem"
            host = urlparse(cfg.endpoint).hostname or ""
            if host in ("", "0.0.0.0", "::"):  # listening on all addresses: clients reach it by the host's name
                host = socket.gethostname()
            await setup_self_signed_certificate(key, cert, app_uri, host, [ExtendedKeyUsageOID.SERVER_AUTH],
                                                {"commonName": f"inspectd {self.station}"})
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))

    def _select_recipe(self, parent: Any, recipe_no: ua.Variant) -> list[ua.Variant]:
        value = int(recipe_no.Value)
        ok = bool(self.on_recipe(value)) if self.on_recipe is not None else False
        log.info("opcua_recipe_select", recipe_no=value, accepted=ok)
        return [ua.Variant(ok, ua.VariantType.Boolean)]


def _initial(vtype: ua.VariantType) -> Any:
    return {ua.VariantType.String: "", ua.VariantType.Boolean: False, ua.VariantType.Double: 0.0}.get(vtype, 0)


def main(argv: list[str]) -> int:
    """`python -m inspectd.outputs.opcua hash-password` reads a password on stdin, prints the users: entry value."""
    if argv[:1] != ["hash-password"]:
        print("usage: python -m inspectd.outputs.opcua hash-password < password", file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("empty password", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
