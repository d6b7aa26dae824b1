"""The condition grammar: precedence, parentheses, quantifiers, and errors that name the column."""

from __future__ import annotations

import itertools

import pytest

from monitor.engine.condition import (
    And,
    ConditionError,
    Not,
    Or,
    Quantified,
    Ref,
    evaluate_with,
    parse_condition,
)


def names(node) -> object:
    """A compact spelling of the tree."""
    if isinstance(node, Ref):
        return node.name
    if isinstance(node, Not):
        return ("not", names(node.operand))
    if isinstance(node, And):
        return ("and", *[names(o) for o in node.operands])
    if isinstance(node, Or):
        return ("or", *[names(o) for o in node.operands])
    assert isinstance(node, Quantified)
    return (node.quantifier, "of", node.pattern)


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("a", "a"),
        ("a or b and c", ("or", "a", ("and", "b", "c"))),
        ("a and b or c", ("or", ("and", "a", "b"), "c")),
        ("not a and b", ("and", ("not", "a"), "b")),
        ("not (a and b)", ("not", ("and", "a", "b"))),
        ("not not a", ("not", ("not", "a"))),
        ("(a or b) and c", ("and", ("or", "a", "b"), "c")),
        ("a and b and c", ("and", "a", "b", "c")),
        ("a or not b or c", ("or", "a", ("not", "b"), "c")),
        ("1 of sel* and not filter", ("and", ("1", "of", "sel*"), ("not", "filter"))),
        ("all of sel_* or x", ("or", ("all", "of", "sel_*"), "x")),
        ("1 of them", ("1", "of", "them")),
        ("ALL OF them", ("all", "of", "them")),
        ("A AND NOT b", ("and", "A", ("not", "b"))),
        ("  a  and(b)  ", ("and", "a", "b")),
        ("sel.one or sel-two", ("or", "sel.one", "sel-two")),
    ],
)
def test_precedence_not_over_and_over_or(text: str, tree: object) -> None:
    assert names(parse_condition(text)) == tree


def test_evaluation_matches_python_semantics_for_every_assignment() -> None:
    text = "a or not b and (c or a) and not (b and c)"
    node = parse_condition(text)
    for a, b, c in itertools.product([False, True], repeat=3):
        expected = a or ((not b) and (c or a) and not (b and c))
        assert evaluate_with(node, {"a": a, "b": b, "c": c}) is expected


def test_quantifiers_over_patterns_and_them() -> None:
    results = {"sel_a": True, "sel_b": False, "other": False}
    assert evaluate_with(parse_condition("1 of sel_*"), results) is True
    assert evaluate_with(parse_condition("all of sel_*"), results) is False
    assert evaluate_with(parse_condition("1 of them"), results) is True
    assert evaluate_with(parse_condition("all of them"), {"x": True, "y": True}) is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the condition is empty at column 1"),
        ("a and", "expected a selection name, 'not', '1 of', 'all of' or '(', found the end at column 6"),
        ("a b", "expected and, or or the end, found 'b' at column 3"),
        ("(a or b", "expected ')' to close the '(' at column 1, found the end at column 8"),
        ("a or b)", "expected and, or or the end, found ')' at column 7"),
        ("a && b", "unexpected character '&' at column 3"),
        ("2 of sel*", "only '1 of' and 'all of' are supported, not '2 of' at column 1"),
        ("1 sel*", "expected 'of' after '1', found 'sel*' at column 3"),
        ("all of", "expected a selection pattern or 'them' after 'of', found the end at column 7"),
        ("sel* or a", "a pattern like 'sel*' needs '1 of' or 'all of' before it at column 1"),
        ("not", "expected a selection name, 'not', '1 of', 'all of' or '(', found the end at column 4"),
        ("a and or b", "expected a selection name, 'not', '1 of', 'all of' or '(', found 'or' at column 7"),
    ],
)
def test_syntax_errors_name_the_column(text: str, message: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    assert str(caught.value) == message


def test_no_eval_anywhere() -> None:
    with pytest.raises(ConditionError):
        parse_condition("__import__('os').system('true')")
