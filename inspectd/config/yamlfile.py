"""YAML loading that remembers where every key came from, so errors can name file:line.

The same reader serves check-config, start-up and reload, so it refuses what would otherwise surprise a
running daemon: bytes that are not UTF-8, a key given twice (YAML silently keeps the last one) and aliases
that expand beyond a small bound (an "alias bomb" grows to gigabytes while it is validated)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]

MAX_ALIAS_VALUES = 10_000  # values added by expanding aliases; a recipe reusing a block a few times needs tens
MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class YamlDoc:
    path: Path
    data: Any
    lines: dict[Loc, int]  # key path -> 1-based line of the key (or of the item for lists)

    def line_of(self, loc: Loc) -> int:
        """Line of the deepest known prefix of `loc` (a missing key is reported at its parent)."""
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return self.lines[loc[:n]]
        return 1


def key_text(loc: Loc) -> str:
    """('rules', 0, 'min_score') -> 'rules[0].min_score', as a technician reads it."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


class YamlSyntaxError(Exception):
    def __init__(self, path: Path, line: int, column: int, problem: str) -> None:
        self.path, self.line, self.column, self.problem = path, line, column, problem
        super().__init__(f"{path}:{line}:{column}: YAML syntax: {problem}")


class YamlContentError(Exception):
    """Parsable but refused (encoding, duplicate key, alias bomb): `file:line: key: message`."""

    def __init__(self, path: Path, line: int, loc: Loc, problem: str) -> None:
        self.path, self.line, self.loc, self.problem = path, line, loc, problem
        super().__init__(f"{path}:{line}: {key_text(loc)}: {problem}")


@dataclass(frozen=True)
class _Key:
    loc: Loc
    line: int
    index: int  # character offset of the key in the text


def _walk(path: Path, root: yaml.Node) -> list[_Key]:
    """Every key and list item of the expanded document, in no particular order; raises YamlContentError for a
    duplicate key or when aliases add more than MAX_ALIAS_VALUES values (iterative: deep nesting is fine too)."""
    keys: list[_Key] = []
    seen: set[int] = set()
    expanded = 0
    stack: list[tuple[yaml.Node, Loc, int]] = [(root, (), 1)]
    while stack:
        node, loc, line = stack.pop()
        if id(node) in seen:  # an alias: the same node again (a recursive alias comes back forever)
            expanded += 1
            if expanded > MAX_ALIAS_VALUES:
                raise YamlContentError(path, line, loc, f"aliases (*name) expand to more than {MAX_ALIAS_VALUES} "
                                                        "values: write the values out instead")
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_TAG:  # `<<: *base`: keys given here override the merged ones
                    stack.append((value_node, loc, key_node.start_mark.line + 1))
                    continue
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
                key_line = key_node.start_mark.line + 1
                if key in first:
                    raise YamlContentError(path, key_line, (*loc, key),
                                           f"duplicate key (first given on line {first[key]}); keep one")
                first[key] = key_line
                keys.append(_Key((*loc, key), key_line, key_node.start_mark.index))
                stack.append((value_node, (*loc, key), key_line))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                item_line = item.start_mark.line + 1
                keys.append(_Key((*loc, i), item_line, item.start_mark.index))
                stack.append((item, (*loc, i), item_line))
    return keys


def _key_before(text: str, index: int) -> Loc:
    """The key at or before character `index` (best effort: for messages about a spot in a broken file)."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        keys = _walk(Path("?"), node) if node is not None else []
    except (yaml.YAMLError, YamlContentError):
        return ()
    before = [k for k in keys if k.index <= index]
    return max(before, key=lambda k: (k.index, len(k.loc))).loc if before else ()


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        loc = _key_before(raw.decode("utf-8", "replace"), len(raw[:e.start].decode("utf-8")))
        raise YamlContentError(path, line, loc, f"byte 0x{raw[e.start]:02x} at column {column} is not UTF-8: "
                                                "save the file as UTF-8 (any character, umlauts too, is fine "
                                                "in UTF-8)") from None


def read_yaml(path: Path) -> YamlDoc:
    """Parse one YAML file. Raises YamlSyntaxError (line/column) on bad syntax, YamlContentError for input
    that parses but is refused, OSError when it cannot be read."""
    text = _decode(path, path.read_bytes())
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # the reader checks for unprintable characters here
        node = loader.get_single_node()
        keys = _walk(path, node) if node is not None else []  # before constructing: bounded by the checks
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlSyntaxError(path, line, col, str(e.problem or e.context)) from None
    except yaml.reader.ReaderError as e:  # e.g. a control character pasted into the file
        line = text.count("\n", 0, e.position) + 1
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        raise YamlSyntaxError(path, line, col, f"character {e.character!r} is not allowed in YAML") from None
    except yaml.YAMLError as e:  # pragma: no cover - unmarked errors are rare
        raise YamlSyntaxError(path, 1, 1, str(e)) from None
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[Loc, int] = {(): 1}
    for k in keys:
        lines.setdefault(k.loc, k.line)  # the first occurrence of a path reached twice through a merge
    return YamlDoc(path=path, data={} if data is None else data, lines=lines)
