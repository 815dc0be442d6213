"""Load and validate a station file and its products; every problem becomes `file:line: key: message`."""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args

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


def _model_at(model: type[BaseModel], loc: Loc, data: Any) -> type[BaseModel] | None:
    """The config model class that holds the keys at `loc` (unions picked by the data's `type`/`name` tag)."""
    cls: type[BaseModel] | None = model
    node = data
    for part in loc:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if cls is None or part not in cls.model_fields:
            return None
        node = node.get(part) if isinstance(node, dict) else None
        cls = _model_in(cls.model_fields[part].annotation, node)
    return cls


def _model_in(annotation: Any, node: Any) -> type[BaseModel] | None:
    """The BaseModel inside Optional/list/Annotated/union `annotation`, choosing a union member by tag."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    members = [m for m in (_model_in(a, node) for a in get_args(annotation)) if m is not None]
    if len(members) <= 1:
        return members[0] if members else None
    if isinstance(node, dict):
        for m in members:
            for tag in ("type", "name"):
                field_ = m.model_fields.get(tag)
                if field_ is not None and node.get(tag) in get_args(field_.annotation):
                    return m
    return None


def _did_you_mean(model: type[BaseModel], loc: Loc, data: Any) -> str:
    """` -- did you mean 'X'?` for a misspelt key, from the keys its section allows."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    cls = _model_at(model, loc[:-1], data)
    if cls is None:
        return ""
    close = difflib.get_close_matches(loc[-1], list(cls.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


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
            if err["type"] == "extra_forbidden":
                message += _did_you_mean(model, loc, doc.data)
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


@dataclass
class ConfigReport:
    """Everything that loaded, and every problem of every file (one pass: a station error hides no product's)."""

    path: Path
    station: StationConfig | None = None
    products: dict[str, ProductConfig] = field(default_factory=dict)
    docs: dict[str, YamlDoc] = field(default_factory=dict)  # product name -> its YAML (lines for later checks)
    product_paths: dict[str, Path] = field(default_factory=dict)
    station_doc: YamlDoc | None = None
    problems: list[str] = field(default_factory=list)


def collect_config(path: str | Path) -> ConfigReport:
    """Validate the station file and every product next to it, collecting all problems instead of stopping."""
    path = Path(path).resolve()
    report = ConfigReport(path)
    try:
        report.station_doc = _read(path)
        report.station = resolve_paths(validate(report.station_doc, StationConfig), path.parent)
    except ConfigError as e:
        report.problems.extend(e.problems)
        if report.station_doc is not None:  # so the products' models can still be checked in this pass
            report.station = _salvage(report.station_doc, StationConfig, path.parent)
    products_dir = _products_dir(report, path)
    if products_dir is None:
        return report
    if not products_dir.is_dir():
        report.problems.append(f"{path}:{_line(report, ('products_dir',))}: products_dir: folder not found: "
                               f"{products_dir}")
        return report
    for file in sorted(products_dir.glob("*.y*ml")):
        try:
            product, doc = _load_product(file)
        except ConfigError as e:
            report.problems.extend(e.problems)
            continue
        if product.name in report.products:
            report.problems.append(format_error(doc, ("name",), f"product {product.name!r} is also defined in "
                                                                f"{report.product_paths[product.name]}"))
        clash = next((p for p in report.products.values() if p.plc_id == product.plc_id), None)
        if clash:
            report.problems.append(format_error(doc, ("plc_id",),
                                                f"{product.plc_id} is also used by product {clash.name!r}"))
        report.products[product.name] = product
        report.docs[product.name] = doc
        report.product_paths[product.name] = file
    st = report.station
    if st is not None and st.product not in report.products and report.station_doc is not None and \
            not any(p.startswith(str(products_dir)) for p in report.problems):
        report.problems.append(format_error(report.station_doc, ("product",),
                                            f"no product {st.product!r} in {products_dir} "
                                            f"(have: {', '.join(sorted(report.products)) or 'none'})"))
    return report


def _salvage(doc: YamlDoc, model: type[M], base: Path, rounds: int = 5) -> M | None:
    """The file with its faulty keys left out (defaults in their place), if that validates: used only to go on
    checking what depends on it; the problems themselves were reported from the file as written."""
    data = copy.deepcopy(doc.data)
    for _ in range(rounds):
        try:
            return resolve_paths(model.model_validate(data), base)
        except ValidationError as e:
            removed = False
            for err in e.errors():
                loc = _clean_loc(err["loc"], data)
                parent = data
                for part in loc[:-1]:
                    parent = parent[part] if _has(parent, part) else None
                if loc and isinstance(parent, dict) and loc[-1] in parent:
                    del parent[loc[-1]]
                    removed = True
            if not removed:
                return None
    return None


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and part < len(node)


def _products_dir(report: ConfigReport, path: Path) -> Path | None:
    """The products folder, also when the station file failed validation elsewhere (so products get checked)."""
    if report.station is not None:
        return report.station.products_dir
    data = report.station_doc.data if report.station_doc is not None else None
    value = data.get("products_dir", "products") if isinstance(data, dict) else None
    return (path.parent / value).resolve() if isinstance(value, str) else None


def _line(report: ConfigReport, loc: Loc) -> int:
    return report.station_doc.line_of(loc) if report.station_doc is not None else 1


def load_config(path: str | Path) -> Config:
    """Validate the station file and every product next to it; raise ConfigError listing all problems."""
    report = collect_config(path)
    if report.problems or report.station is None:
        raise ConfigError(report.problems or [f"{report.path}: cannot be loaded"])
    return Config(station=report.station, products=report.products, station_path=report.path,
                  product_paths=report.product_paths)
