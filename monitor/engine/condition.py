"""The condition grammar: a small recursive-descent parser, no eval.

    expr    := or
    or      := and ("or" and)*
    and     := unary ("and" unary)*
    unary   := "not" unary | primary
    primary := "(" expr ")" | ("1" | "all") "of" (PATTERN | NAME | "them") | NAME

Precedence: not > and > or. PATTERN is a selection name with ``*`` wildcards (``sel_*``).
Keywords are case-insensitive. Errors give the 1-based column.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

KEYWORDS = frozenset({"and", "or", "not", "of", "them", "all"})
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_TOKEN = re.compile(r"\s*(?:(?P<paren>[()])|(?P<word>[A-Za-z0-9_.*-]+)|(?P<other>\S))")


class ConditionError(ValueError):
    """A syntax error; ``column`` is 1-based."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} at column {column}")
        self.column = column


@dataclass(frozen=True)
class Token:
    kind: str  # "(" ")" "and" "or" "not" "of" "them" "all" "1" "name" "pattern" "end"
    text: str
    column: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:  # only trailing whitespace is left
            break
        column = match.start(match.lastgroup or 0) + 1
        position = match.end()
        if match.group("paren"):
            tokens.append(Token(match.group("paren"), match.group("paren"), column))
        elif match.group("word"):
            word = match.group("word")
            lower = word.lower()
            if lower in KEYWORDS:
                tokens.append(Token(lower, word, column))
            elif word.isdigit():
                tokens.append(Token("number", word, column))
            elif "*" in word:
                tokens.append(Token("pattern", word, column))
            else:
                tokens.append(Token("name", word, column))
        else:
            raise ConditionError(f"unexpected character {match.group('other')!r}", column)
    tokens.append(Token("end", "", len(text.rstrip()) + 1))
    return tokens


# --- the tree ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    name: str
    column: int


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Quantified:
    quantifier: str  # "1" or "all"
    pattern: str  # a name, a pattern with *, or "them"
    column: int

    def names(self, selections: Sequence[str]) -> list[str]:
        if self.pattern == "them":
            return list(selections)
        return [name for name in selections if fnmatch.fnmatchcase(name, self.pattern)]


Node = Ref | Not | And | Or | Quantified


def _describe(token: Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.index = 0

    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise ConditionError("the condition is empty", 1)
        node = self.parse_or()
        token = self.peek()
        if token.kind != "end":
            raise ConditionError(f"expected and, or or the end, found {_describe(token)}", token.column)
        return node

    def parse_or(self) -> Node:
        operands = [self.parse_and()]
        while self.peek().kind == "or":
            self.take()
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def parse_and(self) -> Node:
        operands = [self.parse_unary()]
        while self.peek().kind == "and":
            self.take()
            operands.append(self.parse_unary())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def parse_unary(self) -> Node:
        if self.peek().kind == "not":
            self.take()
            return Not(self.parse_unary())
        return self.parse_primary()

    def parse_primary(self) -> Node:
        token = self.take()
        if token.kind == "(":
            node = self.parse_or()
            closing = self.take()
            if closing.kind != ")":
                raise ConditionError(
                    f"expected ')' to close the '(' at column {token.column}, found {_describe(closing)}",
                    closing.column,
                )
            return node
        if token.kind in ("number", "all"):
            if token.kind == "number" and token.text != "1":
                raise ConditionError(
                    f"only '1 of' and 'all of' are supported, not '{token.text} of'", token.column
                )
            of = self.take()
            if of.kind != "of":
                raise ConditionError(f"expected 'of' after '{token.text}', found {_describe(of)}", of.column)
            target = self.take()
            if target.kind not in ("name", "pattern", "them"):
                raise ConditionError(
                    f"expected a selection pattern or 'them' after 'of', found {_describe(target)}",
                    target.column,
                )
            pattern = "them" if target.kind == "them" else target.text
            return Quantified("1" if token.kind == "number" else "all", pattern, token.column)
        if token.kind == "name":
            return Ref(token.text, token.column)
        if token.kind == "pattern":
            raise ConditionError(
                f"a pattern like {token.text!r} needs '1 of' or 'all of' before it", token.column
            )
        raise ConditionError(
            f"expected a selection name, 'not', '1 of', 'all of' or '(', found {_describe(token)}",
            token.column,
        )


def parse_condition(text: str) -> Node:
    """Parse a condition string; raise ConditionError naming the column."""
    return _Parser(text).parse()


def referenced(node: Node, selections: Sequence[str]) -> tuple[set[str], list[str]]:
    """(selection names the condition uses, problems: names or patterns that match nothing)."""
    used: set[str] = set()
    problems: list[str] = []

    def walk(item: Node) -> None:
        if isinstance(item, Ref):
            if item.name in selections:
                used.add(item.name)
            else:
                problems.append(
                    f"the condition names selection {item.name!r}, which is not defined "
                    f"(column {item.column})"
                )
        elif isinstance(item, Not):
            walk(item.operand)
        elif isinstance(item, And | Or):
            for operand in item.operands:
                walk(operand)
        else:
            names = item.names(selections)
            if not names:
                problems.append(
                    f"'{item.quantifier} of {item.pattern}' matches no selection (column {item.column})"
                )
            used.update(names)

    walk(node)
    return used, problems


Predicate = Callable[[object], bool]


def compile_condition(node: Node, selections: dict[str, Predicate]) -> Predicate:
    """Turn the tree into one closure that evaluates selections lazily (short-circuit)."""
    names = list(selections)
    if isinstance(node, Ref):
        return selections[node.name]
    if isinstance(node, Not):
        inner = compile_condition(node.operand, selections)
        return lambda event: not inner(event)
    if isinstance(node, And | Or):
        parts = tuple(compile_condition(operand, selections) for operand in node.operands)
        if len(parts) == 2:
            first, second = parts
            if isinstance(node, And):
                return lambda event: first(event) and second(event)
            return lambda event: first(event) or second(event)
        if isinstance(node, And):
            return lambda event: all(part(event) for part in parts)
        return lambda event: any(part(event) for part in parts)
    chosen = tuple(selections[name] for name in node.names(names))
    if len(chosen) == 1:
        return chosen[0]
    if node.quantifier == "1":
        return lambda event: any(part(event) for part in chosen)
    return lambda event: all(part(event) for part in chosen)


def evaluate_with(node: Node, results: dict[str, bool]) -> bool:
    """Evaluate the tree against known selection results (for explain)."""
    if isinstance(node, Ref):
        return results[node.name]
    if isinstance(node, Not):
        return not evaluate_with(node.operand, results)
    if isinstance(node, And):
        return all(evaluate_with(operand, results) for operand in node.operands)
    if isinstance(node, Or):
        return any(evaluate_with(operand, results) for operand in node.operands)
    values = [results[name] for name in node.names(list(results))]
    return any(values) if node.quantifier == "1" else all(values)


TypeFilter = Callable[[str], bool]


def type_filter(node: Node, filters: dict[str, TypeFilter | None]) -> TypeFilter | None:
    """A test on the event type that every matching event passes, or None when the condition needs none.

    Used to index rules by event type: ``and`` needs any constrained operand, ``or`` needs all of them,
    ``not`` constrains nothing.
    """
    names = list(filters)
    if isinstance(node, Ref):
        return filters[node.name]
    if isinstance(node, Not):
        return None
    if isinstance(node, Quantified):
        parts: list[TypeFilter | None] = [filters[name] for name in node.names(names)]
        is_and = node.quantifier == "all"
    else:
        parts = [type_filter(operand, filters) for operand in node.operands]
        is_and = isinstance(node, And)
    if is_and:
        known = tuple(part for part in parts if part is not None)
        if not known:
            return None
        return known[0] if len(known) == 1 else (lambda t: all(part(t) for part in known))
    if not parts or any(part is None for part in parts):
        return None
    alternatives = tuple(part for part in parts if part is not None)
    return alternatives[0] if len(alternatives) == 1 else (lambda t: any(part(t) for part in alternatives))
