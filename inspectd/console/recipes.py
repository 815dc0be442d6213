"""Recipe changes from the console: switch the active product, or change one rule's threshold.

Both need the operator token. A product switch goes through `Daemon.switch_product` (applied between parts, like
the PLC's LOAD_RECIPE). A threshold change edits that one value in the product file, validates the whole station
with `load_config` (what `inspectd check-config` runs), and asks for a reload (SIGHUP's path: new runtimes and
golden checks built beside the running ones, applied between parts); if the check or the reload refuses it, the
file gets its old text back. Every request, refused or applied, is an audit row (who, when, old -> new).
"""

from __future__ import annotations

import hmac
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from inspectd.config.load import Config, load_config
from inspectd.config.yamlfile import YamlContentError, YamlSyntaxError, read_yaml
from inspectd.console.store import ConsoleStore
from inspectd.errors import ConfigError

if TYPE_CHECKING:
    from inspectd.pipeline.pipeline import Pipeline

RELOAD_WAIT_S = 120.0  # a reload loads every product's model and runs its golden images
_NUMBER = re.compile(r"(min_score\s*:\s*)([-+0-9.eE]+)")


class RecipeHost(Protocol):
    """What a recipe change needs from the daemon."""

    @property
    def config(self) -> Config: ...

    @property
    def pipeline(self) -> Pipeline | None: ...

    @property
    def reloads(self) -> Mapping[str, int]: ...

    def switch_product(self, name: str) -> bool: ...

    def request_reload(self) -> None: ...


@dataclass(frozen=True)
class Outcome:
    status: int  # HTTP status
    body: dict[str, Any]


def read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def recipe_view(config: Config, active: str) -> dict[str, Any]:
    """The recipes as the page shows them (read-only)."""
    products = []
    for name, p in sorted(config.products.items()):
        products.append({"name": name, "plc_id": p.plc_id, "kind": p.kind, "active": name == active,
                         "roi": p.preprocess.roi.model_dump(), "failsafe": p.failsafe,
                         "rules": [{"name": r.name, "class": r.class_name, "min_score": r.min_score,
                                    "threshold": p.threshold(r), "result_code": r.result_code} for r in p.rules]})
    return {"active": active, "products": products}


class Recipes:
    def __init__(self, host: RecipeHost, store: ConsoleStore, token_file: Path | None) -> None:
        self.host = host
        self.store = store
        self.token_file = token_file
        self._busy = threading.Lock()  # one change at a time

    @property
    def writable(self) -> bool:
        return read_token(self.token_file) is not None

    def authorised(self, given: str | None) -> bool:
        token = read_token(self.token_file)  # read each time: rotating the token needs no restart
        return token is not None and given is not None and hmac.compare_digest(token.encode(), given.encode())

    def active(self) -> str:
        p = self.host.pipeline
        return p.active.name if p is not None else self.host.config.station.product

    def change(self, body: Mapping[str, Any], who: str, client: str, token: str | None) -> Outcome:
        action = str(body.get("action", ""))
        if action not in ("switch_product", "set_threshold"):
            return Outcome(400, {"error": "action must be switch_product or set_threshold"})
        target = str(body.get("product", ""))
        if action == "set_threshold":
            target = f"{target}/{body.get('rule', '')}"
        if not self.authorised(token):
            why = "no operator token configured (console.token_file)" if not self.writable else "bad or no token"
            self.store.audit(who, client, action, target, "", str(body.get("value", body.get("product", ""))),
                             f"refused: {why}")
            return Outcome(403, {"error": why})
        if not self._busy.acquire(blocking=False):
            return Outcome(409, {"error": "another recipe change is being applied"})
        try:
            if action == "switch_product":
                return self._switch(str(body.get("product", "")), who, client)
            return self._threshold(str(body.get("product", "")), str(body.get("rule", "")), body.get("value"),
                                   who, client)
        finally:
            self._busy.release()

    def _switch(self, name: str, who: str, client: str) -> Outcome:
        old = self.active()
        if name not in self.host.config.products or not self.host.switch_product(name):
            why = f"no product {name!r} (have: {', '.join(sorted(self.host.config.products))})"
            self.store.audit(who, client, "switch_product", name, old, name, f"refused: {why}")
            return Outcome(400, {"error": why})
        self.store.audit(who, client, "switch_product", name, old, name, "applied")
        return Outcome(200, {"applied": True, "old": old, "new": name, "note": "from the next part on"})

    def _threshold(self, product: str, rule: str, value: Any, who: str, client: str) -> Outcome:
        target = f"{product}/{rule}"
        config = self.host.config
        p = config.products.get(product)
        path = config.product_paths.get(product)
        index = next((i for i, r in enumerate(p.rules) if r.name == rule), None) if p is not None else None
        try:
            new = float(value)
        except (TypeError, ValueError):
            new = float("nan")
        if p is None or path is None or index is None or new != new:
            why = f"unknown product/rule {target!r}" if index is None else f"value must be a number (got {value!r})"
            self.store.audit(who, client, "set_threshold", target, "", str(value), f"refused: {why}")
            return Outcome(400, {"error": why})
        old = p.rules[index].min_score
        try:
            text = path.read_text()
            edited = edit_min_score(path, text, index, new)
        except (OSError, ValueError, YamlSyntaxError, YamlContentError) as e:
            self.store.audit(who, client, "set_threshold", target, str(old), str(new), f"refused: {e}")
            return Outcome(400, {"error": str(e)})
        write_atomic(path, edited)
        try:
            load_config(config.station_path)  # exactly what check-config validates
        except ConfigError as e:
            write_atomic(path, text)
            self.store.audit(who, client, "set_threshold", target, str(old), str(new), "refused: invalid",
                             "\n".join(e.problems))
            return Outcome(400, {"error": "invalid", "problems": e.problems})
        applied = self._reload()
        if not applied:
            write_atomic(path, text)  # the daemon kept the old recipe: the file says so again
            self.store.audit(who, client, "set_threshold", target, str(old), str(new),
                             "refused: reload rejected (see the log: reload_rejected)")
            return Outcome(409, {"error": "reload rejected: the running recipe is unchanged (see the log)"})
        self.store.audit(who, client, "set_threshold", target, str(old), str(new), "applied")
        return Outcome(200, {"applied": True, "old": old, "new": new, "note": "from the next part on"})

    def _reload(self, wait_s: float = RELOAD_WAIT_S, sleep: Callable[[float], None] = time.sleep) -> bool:
        before = dict(self.host.reloads)
        self.host.request_reload()
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            now = self.host.reloads
            if now.get("applied", 0) > before.get("applied", 0):
                return True
            if now.get("rejected", 0) > before.get("rejected", 0):
                return False
            sleep(0.05)
        return False


def write_atomic(path: Path, text: str) -> None:
    """A reload (or check-config) reading the file meanwhile sees the old text or the new, never half of one."""
    tmp = path.with_name(f".{path.name}.console-tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def edit_min_score(path: Path, text: str, index: int, value: float) -> str:
    """`text` with rules[index].min_score set to `value`, the rest of the file (comments too) untouched."""
    doc = read_yaml(path)
    line = doc.line_of(("rules", index, "min_score"))
    lines = text.splitlines(keepends=True)
    if not 1 <= line <= len(lines):
        raise ValueError(f"{path}: rules[{index}].min_score: not found")
    # The key's line; in a flow mapping ({name: ..., min_score: 0.5}) several rules never share a line.
    new, n = _NUMBER.subn(lambda m: m.group(1) + repr(value), lines[line - 1], count=1)
    if n != 1:
        raise ValueError(f"{path}:{line}: rules[{index}].min_score: cannot edit this line")
    lines[line - 1] = new
    return "".join(lines)
