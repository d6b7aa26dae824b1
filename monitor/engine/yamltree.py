"""YAML composed into plain Python values that remember the line of every key and item.

Rule errors must name ``FILE:LINE``, so documents are composed (not just loaded) and each mapping
and sequence keeps the marks of its entries. Scalars are resolved exactly as ``yaml.safe_load`` would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml


class YMap(dict[str, Any]):
    """A mapping with the line of itself, of each key, and of each value."""

    line: int = 0
    key_lines: dict[str, int]

    def key_line(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class YSeq(list[Any]):
    """A sequence with the line of itself and of each item."""

    line: int = 0
    item_lines: tuple[int, ...] | list[int] = ()

    def item_line(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


class YamlProblem(Exception):
    """A syntax or structure problem at one line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


_constructor = yaml.SafeLoader("")
# libyaml's parser when present (ten times faster); both keep the marks we need for line numbers.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _scalar(node: yaml.ScalarNode) -> Any:
    return _constructor.construct_object(node, deep=True)


_MAX_NODES = 200_000  # aliases may share a node many times over; a "billion laughs" file stops here


class _Converter:
    """Nodes to values. Aliases are allowed, but not recursive ones, and the expanded size is bounded."""

    def __init__(self) -> None:
        self.active: set[int] = set()
        self.count = 0

    def convert(self, node: yaml.Node) -> Any:
        line = node.start_mark.line + 1
        self.count += 1
        if self.count > _MAX_NODES:
            raise YamlProblem(line, f"the document expands to more than {_MAX_NODES} values (aliases?)")
        if id(node) in self.active:
            raise YamlProblem(line, "an alias refers to a node that contains it")
        if isinstance(node, yaml.MappingNode):
            self.active.add(id(node))
            out = YMap()
            out.line = line
            out.key_lines = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise YamlProblem(key_node.start_mark.line + 1, "a key must be a plain string")
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise YamlProblem(key_node.start_mark.line + 1, "merge keys (<<) are not supported")
                key = str(key_node.value)
                key_line = key_node.start_mark.line + 1
                if key in out:
                    raise YamlProblem(
                        key_line, f"key {key!r} given twice (first at line {out.key_lines[key]})"
                    )
                out.key_lines[key] = key_line
                out[key] = self.convert(value_node)
            self.active.discard(id(node))
            return out
        if isinstance(node, yaml.SequenceNode):
            self.active.add(id(node))
            seq = YSeq(self.convert(item) for item in node.value)
            self.active.discard(id(node))
            seq.line = line
            seq.item_lines = [item.start_mark.line + 1 for item in node.value]
            return seq
        assert isinstance(node, yaml.ScalarNode)
        try:
            return _scalar(node)
        except yaml.YAMLError as exc:
            raise YamlProblem(line, f"unreadable value: {exc}") from None
        except ValueError as exc:  # a date-shaped value that is no date: 2026-02-30
            raise YamlProblem(line, f"unreadable value {node.value!r}: {exc}") from None


def load_documents(text: str) -> Iterator[tuple[int, Any]]:
    """Yield (line, value) per document; a syntax error raises YamlProblem with its line."""
    try:
        for node in yaml.compose_all(text, Loader=_LOADER):
            if node is None:
                continue
            yield node.start_mark.line + 1, _Converter().convert(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or str(exc)
        if exc.context:
            problem = f"{exc.context}: {problem}" if exc.problem else exc.context
        raise YamlProblem(line, f"not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise YamlProblem(1, f"not valid YAML: {exc}") from None
