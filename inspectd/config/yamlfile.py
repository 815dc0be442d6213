"""YAML loading that remembers where every key came from, so errors can name file:line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]


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


class YamlSyntaxError(Exception):
    def __init__(self, path: Path, line: int, column: int, problem: str) -> None:
        self.path, self.line, self.column, self.problem = path, line, column, problem
        super().__init__(f"{path}:{line}:{column}: YAML syntax: {problem}")


def _index(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*loc, key_node.value)  # a name, not lines[(*loc, k)]: mypy reads that as 3.11-only syntax
            lines[child] = key_node.start_mark.line + 1
            _index(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*loc, i)
            lines[child] = item.start_mark.line + 1
            _index(item, child, lines)


def read_yaml(path: Path) -> YamlDoc:
    """Parse one YAML file; raise YamlSyntaxError with line/column on bad syntax."""
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlSyntaxError(path, line, col, str(e.problem or e.context)) from None
    except yaml.YAMLError as e:  # pragma: no cover - unmarked errors are rare
        raise YamlSyntaxError(path, 1, 1, str(e)) from None
    lines: dict[Loc, int] = {(): 1}
    if node is not None:
        _index(node, (), lines)
    return YamlDoc(path=path, data={} if data is None else data, lines=lines)
