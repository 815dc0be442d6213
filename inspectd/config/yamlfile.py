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
MAX_DEPTH = 100  # a recipe nests a few levels; PyYAML's recursive composer fails somewhere past a few hundred
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
    duplicate key, nesting beyond MAX_DEPTH, or aliases adding more than MAX_ALIAS_VALUES values. Iterative and
    bounded by those limits, so it is safe on any input the parser accepted."""
    keys: list[_Key] = []
    first_line: dict[Loc, int] = {}
    seen: set[int] = set()
    expanded = 0
    # node, where it is, the line to report it at, and how deep its path was where an alias was first followed
    stack: list[tuple[yaml.Node, Loc, int, int | None]] = [(root, (), 1, None)]
    while stack:
        node, loc, line, alias_at = stack.pop()
        if id(node) in seen:  # an alias: the same node again (a recursive alias comes back forever)
            expanded += 1
            alias_at = len(loc) if alias_at is None else alias_at
            if expanded > MAX_ALIAS_VALUES:
                where = loc[:alias_at]
                while where and isinstance(where[-1], int):  # the key holding the alias, not a list position
                    where = where[:-1]
                raise YamlContentError(path, first_line.get(where, line), where,
                                       f"aliases (*name) expand to more than {MAX_ALIAS_VALUES} values: write the "
                                       "values out instead")
        seen.add(id(node))
        if len(loc) > MAX_DEPTH:
            raise YamlContentError(path, line, loc[:3], f"nested more than {MAX_DEPTH} levels deep "
                                                        "(an alias inside itself?)")
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_TAG:  # `<<: *base`: keys given here override the merged ones
                    stack.append((value_node, loc, key_node.start_mark.line + 1, alias_at))
                    continue
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
                key_line = key_node.start_mark.line + 1
                if key in first:
                    raise YamlContentError(path, key_line, (*loc, key),
                                           f"duplicate key (first given on line {first[key]}); keep one")
                first[key] = key_line
                child: Loc = (*loc, key)
                keys.append(_Key(child, key_line, key_node.start_mark.index))
                first_line.setdefault(child, key_line)
                stack.append((value_node, child, key_line, alias_at))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                item_line = item.start_mark.line + 1
                child = (*loc, i)
                keys.append(_Key(child, item_line, item.start_mark.index))
                first_line.setdefault(child, item_line)
                stack.append((item, child, item_line, alias_at))
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
    except (yaml.YAMLError, YamlContentError, RecursionError):
        return ()
    before = [k for k in keys if k.index <= index]
    return max(before, key=lambda k: (k.index, len(k.loc))).loc if before else ()


def _too_deep(text: str) -> tuple[int, Loc]:
    """Line and key path where nesting first goes deeper than MAX_DEPTH, from the parser's event stream (which,
    unlike the composer, does not recurse)."""
    stack: list[list[Any]] = []  # per open collection: [is_mapping, key or index, expecting a key]
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionEndEvent):
                stack.pop()
            elif isinstance(event, yaml.NodeEvent):
                if stack and stack[-1][0] and stack[-1][2]:  # a mapping key
                    stack[-1][1] = getattr(event, "value", "?")
                    stack[-1][2] = False
                    continue
                if stack:
                    top = stack[-1]
                    if top[0]:
                        top[2] = True  # a mapping value: the next node is a key again
                    else:
                        top[1] = 0 if top[1] is None else top[1] + 1
                if isinstance(event, yaml.CollectionStartEvent):
                    if len(stack) >= MAX_DEPTH:
                        loc = tuple(e[1] for e in stack if e[1] is not None)
                        return (event.start_mark.line + 1 if event.start_mark else 1), loc[:3]
                    stack.append([isinstance(event, yaml.MappingStartEvent), None, True])
    except (yaml.YAMLError, RecursionError):
        pass
    return 1, ()


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
    except RecursionError:  # PyYAML composes recursively: thousands of nested [ or { exhaust the stack
        line, loc = _too_deep(text)
        raise YamlContentError(path, line, loc, f"nested more than {MAX_DEPTH} levels deep") from None
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[Loc, int] = {(): 1}
    for k in keys:
        lines.setdefault(k.loc, k.line)  # the first occurrence of a path reached twice through a merge
    return YamlDoc(path=path, data={} if data is None else data, lines=lines)
