"""Matchers on attacker-controlled text: linear wildcards, a bounded text, warnings for risky regexes.

Nothing here is timed. Linearity is shown by the compiled form (a wildcard is a row of fixed-length pieces,
no repetition a regex engine could backtrack over) and by inputs on which the old translation to regexes
(``.*`` per ``*``) would run for hours: ``*a*a*a*a*b`` against 64 KB of ``a`` is O(n^5) for a backtracking
engine, and one pass here.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.engine.matchers import MATCH_TEXT_LIMIT, Wildcard

RULE = """
id: t
title: T
severity: low
match:
  sel: %s
"""


def matcher(load_rules, selection: str):
    return load_rules(RULE % selection).rule("t").matches


def test_a_wildcard_compiles_to_fixed_length_pieces() -> None:
    glob = Wildcard("*drop*table*", many="*", one="?", cased=False)
    assert [piece.pattern for piece in glob.pieces] == ["", "drop", "table", ""]
    like = Wildcard("del_ted % legacy\\_%", many="%", one="_", cased=True)
    assert [piece.pattern for piece in like.pieces] == ["del.ted\\ ", "\\ legacy_", ""]


@pytest.mark.parametrize(
    ("selection", "text"),
    [
        ("{msg|glob: '*a*a*a*a*b'}", "a" * MATCH_TEXT_LIMIT),
        ("{msg|like: '%a%a%a%a%b'}", "a" * MATCH_TEXT_LIMIT),
        ("{msg|glob: '*drop*table*'}", "drop " * 48_000),  # the 240 KB event that held a cycle for 73 s
        ("{msg|glob: ['*x*y*z*', '*drop*table*']}", "drop " * 48_000),
    ],
)
def test_wildcards_on_hostile_text_finish_in_one_pass(load_rules, event, selection: str, text: str) -> None:
    assert not matcher(load_rules, selection)(event(msg=text))
    assert matcher(load_rules, selection)(event(msg=text + "b table xyz")) is (len(text) < MATCH_TEXT_LIMIT)


def _reference(pattern: str, many: str, one: str) -> re.Pattern[str]:
    """The wildcard as a (backtracking) regex: fine for the short texts hypothesis draws."""
    out, escaped = [], False
    for ch in pattern:
        if escaped:
            out.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == many:
            out.append(".*")
        elif ch == one:
            out.append(".")
        else:
            out.append(re.escape(ch))
    if escaped:
        out.append(re.escape("\\"))
    return re.compile("".join(out), re.DOTALL | re.IGNORECASE)


@settings(max_examples=400, deadline=None)
@given(
    pattern=st.text(alphabet="ab*?\\%_\n", max_size=8),
    text=st.text(alphabet="abAB*?\\%_\n", max_size=12),
)
def test_wildcards_match_like_their_regex(pattern: str, text: str) -> None:
    for many, one in (("*", "?"), ("%", "_")):
        expected = _reference(pattern, many, one).fullmatch(text) is not None
        assert Wildcard(pattern, many=many, one=one, cased=False)(text) is expected, (pattern, text, many)


def test_pattern_matchers_see_the_first_64_kb_of_a_text(load_rules, event) -> None:
    assert MATCH_TEXT_LIMIT == 65_536  # the documented figure (docs/rules.md, SECURITY.md), pinned here
    long_text = "x" * 100_000 + "needle"
    assert matcher(load_rules, f"{{msg|re: '^x{{{MATCH_TEXT_LIMIT}}}$'}}")(event(msg=long_text))
    assert not matcher(load_rules, "{msg|re: needle}")(event(msg=long_text))
    assert not matcher(load_rules, "{msg|glob: '*needle'}")(event(msg=long_text))
    assert matcher(load_rules, "{msg|like: 'x%'}")(event(msg=long_text))
    # substring tests are linear in C: they see the whole value
    assert matcher(load_rules, "{msg|contains: needle}")(event(msg=long_text))
    assert matcher(load_rules, "{msg|endswith: needle}")(event(msg=long_text))


@pytest.mark.parametrize("regex", ["(a+)+$", "(a*)*b", "^(\\w+\\s?)*$", "(?:x|y+){2,}z", "((ab)+c?)+"])
def test_nested_quantifiers_are_a_warning(load_rules, regex: str) -> None:
    ruleset = load_rules(RULE % "{msg|re: '%s'}" % regex)
    [warning] = ruleset.warnings
    assert re.fullmatch(
        r".*\.yml:6: t: selection 'sel', key 'msg\|re': nested quantifiers: .* can take exponential time "
        r"on crafted text .*",
        warning,
    ), warning


@pytest.mark.parametrize("regex", ["a+b+", "^(ab)+$", "(a|b)c*", "x{2,5}(yz)?", "[a-z]+@corp\\.io$"])
def test_plain_quantifiers_are_not_warned_about(load_rules, regex: str) -> None:
    assert load_rules(RULE % "{msg|re: '%s'}" % regex).warnings == []


def test_the_bundled_pack_has_no_risky_regex() -> None:
    from monitor.engine import load_ruleset
    from monitor.resources import bundled_rules_dir

    assert load_ruleset([bundled_rules_dir()]).warnings == []
