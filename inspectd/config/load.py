"""Load and validate a station file and its products; every problem becomes `file:line: key: message`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from inspectd.config.schema import ProductConfig, StationConfig
from inspectd.config.yamlfile import Loc, YamlContentError, YamlDoc, YamlSyntaxError, key_text, read_yaml
from inspectd.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Config:
    """A validated station with all its products, paths resolved to absolute."""

    station: StationConfig
    products: dict[str, ProductConfig]
    station_path: Path
    product_paths: dict[str, Path] = field(default_factory=dict)

    def product_by_plc_id(self, plc_id: int) -> ProductConfig | None:
        return next((p for p in self.products.values() if p.plc_id == plc_id), None)


# pydantic error type -> message a technician can act on
_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "missing": "is required",
    "extra_forbidden": "unknown key (misspelt?)",
    "literal_error": "must be one of {expected}",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "too_short": "needs at least {min_length} item(s)",
    "string_too_short": "must not be empty",
    "union_tag_invalid": "type must be one of {expected_tags}",
    "union_tag_not_found": "needs a 'type' key",
    "dict_type": "must be a mapping of keys to values",
    "list_type": "must be a list",
    "model_type": "must be a mapping of keys to values",
}


def _clean_loc(loc: tuple[Any, ...], data: Any) -> Loc:
    """Drop the union-tag and validator parts pydantic adds, keeping the path that exists in the YAML."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # discriminator tag inserted by pydantic
        if isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue  # e.g. 'function-after[...]'
        out.append(part)
        node = node.get(part) if isinstance(node, dict) else (
            node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None
        )
    return tuple(out)


def format_error(doc: YamlDoc, loc: Loc, message: str) -> str:
    return f"{doc.path}:{doc.line_of(loc)}: {key_text(loc)}: {message}"


_KEYED = re.compile(r"^([A-Za-z_]\w*(?:\.\w+|\[\d+\])*): (.*)$", re.S)


def _parse_key(text: str) -> Loc:
    return tuple(int(p[1:-1]) if p.startswith("[") else p for p in re.findall(r"\w+|\[\d+\]", text))


def _num(v: Any) -> Any:
    """Bounds read as the technician wrote them: 0 not 0.0."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _message(err: ErrorDetails) -> str:
    template = _MESSAGES.get(err["type"])
    ctx = err.get("ctx") or {}
    if template:
        try:
            msg = template.format(**{k: _num(v) for k, v in ctx.items()})
        except KeyError:
            msg = err["msg"]
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] not in ("missing", "extra_forbidden", "union_tag_not_found") and "input" in err:
        value = err["input"]
        if not isinstance(value, dict | list):
            msg += f" (got {value!r})"
    return msg


def validate(doc: YamlDoc, model: type[M]) -> M:
    if not isinstance(doc.data, dict):
        raise ConfigError([format_error(doc, (), "the file must hold a mapping of keys to values")])
    try:
        return model.model_validate(doc.data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = _clean_loc(err["loc"], doc.data)
            message = _message(err)
            if err["type"] == "union_tag_invalid":  # point at the bad `type:` line, not the section
                loc = (*loc, "type")
            elif err["type"] == "value_error" and (m := _KEYED.match(message)):
                key = (*loc, *_parse_key(m.group(1)))
                if key in doc.lines:  # a cross-field check naming its key: point at that key's line
                    loc, message = key, m.group(2)
            problems.append(format_error(doc, loc, message))
        raise ConfigError(problems) from None


def _read(path: Path) -> YamlDoc:
    try:
        return read_yaml(path)
    except (YamlSyntaxError, YamlContentError) as e:
        raise ConfigError([str(e)]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None


def resolve_paths(model: M, base: Path) -> M:
    """Copy of `model` with every relative Path field (at any depth) made absolute against `base`."""
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, Path) and not value.is_absolute():
            updates[name] = (base / value).resolve()
        elif isinstance(value, BaseModel):
            new = resolve_paths(value, base)
            if new is not value:
                updates[name] = new
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            updates[name] = [resolve_paths(v, base) for v in value]
        elif isinstance(value, list) and value and isinstance(value[0], Path):
            updates[name] = [v if v.is_absolute() else (base / v).resolve() for v in value]
    return model.model_copy(update=updates) if updates else model


def _load_product(path: Path) -> tuple[ProductConfig, YamlDoc]:
    doc = _read(path)
    product = resolve_paths(validate(doc, ProductConfig), path.parent)
    if not product.model.path.exists():
        raise ConfigError([format_error(doc, ("model", "path"), f"file not found: {product.model.path}")])
    return product, doc


def load_product(path: Path) -> ProductConfig:
    return _load_product(path)[0]


def load_station(path: Path) -> StationConfig:
    doc = _read(path)
    return resolve_paths(validate(doc, StationConfig), path.parent)


def load_config(path: str | Path) -> Config:
    """Validate the station file and every product next to it; raise ConfigError listing all problems."""
    path = Path(path).resolve()
    station = load_station(path)
    problems: list[str] = []
    products: dict[str, ProductConfig] = {}
    paths: dict[str, Path] = {}
    if not station.products_dir.is_dir():
        raise ConfigError([f"{path}: products_dir: folder not found: {station.products_dir}"])
    for file in sorted(station.products_dir.glob("*.y*ml")):
        try:
            product, doc = _load_product(file)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        if product.name in products:
            problems.append(format_error(doc, ("name",), f"product {product.name!r} is also defined in "
                                                         f"{paths[product.name]}"))
        clash = next((p for p in products.values() if p.plc_id == product.plc_id), None)
        if clash:
            problems.append(format_error(doc, ("plc_id",), f"{product.plc_id} is also used by product {clash.name!r}"))
        products[product.name] = product
        paths[product.name] = file
    if not problems and station.product not in products:
        doc = _read(path)
        problems.append(format_error(doc, ("product",), f"no product {station.product!r} in {station.products_dir}"
                                     f" (have: {', '.join(sorted(products)) or 'none'})"))
    if problems:
        raise ConfigError(problems)
    return Config(station=station, products=products, station_path=path, product_paths=paths)
