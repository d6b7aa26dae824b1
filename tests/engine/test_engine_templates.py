"""Alert text: the sandbox, StrictUndefined, the context RULES.md names, and live events that lack a field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from monitor.engine import MemoryStateStore
from monitor.engine.templates import TemplateProblem, compile_template, render

T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "source",
    [
        "{{ event.__class__ }}",
        "{{ event.__class__.__mro__[1].__subclasses__() }}",
        "{{ event['__class__'] }}",
        "{{ rule._private }}",
        "{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}",
    ],
)
def test_dunder_and_private_access_is_refused_when_compiled(source: str) -> None:
    with pytest.raises(TemplateProblem, match="refused by the sandbox"):
        compile_template(source)


@pytest.mark.parametrize(
    "source",
    [
        "{{ events.append(1) }}",
        "{{ event.update({'a': 1}) }}",
        "{{ event.clear() }}",
        "{{ (event|attr('__class__')) }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_the_sandbox_refuses_at_render_time(source: str) -> None:
    try:
        template = compile_template(source)
    except TemplateProblem:
        return  # refused even earlier
    with pytest.raises(TemplateProblem):
        render(template, {"event": {"a": 1}, "events": [1]})


def test_strict_undefined_and_plain_text() -> None:
    with pytest.raises(TemplateProblem, match="'dict object' has no attribute 'nope'"):
        render(compile_template("{{ event.nope }}"), {"event": {}})
    # alert text is plain text: no HTML escaping here, each channel escapes for its medium
    assert (
        render(compile_template("{{ event.msg }}"), {"event": {"msg": "<!channel> & co"}})
        == "<!channel> & co"
    )


def test_context_and_rendering(load_rules, event) -> None:
    ruleset = load_rules(
        """
        id: t
        title: "Literal {braces} stay {{ as written }}"
        description: What it means.
        severity: medium
        tags: [x]
        match: {sel: {type: Delete Table}}
        alert:
          text: |
            {{ rule.id }} {{ rule.severity }} {{ rule.title }} {{ count }} {{ events | length }} {{ group }}
            {{ event.created_at.strftime('%H:%M %Z') }} {{ event.workspace.name }}
            {{- ' ' ~ event.source }} {{ event.id }}
        """,
        default_timezone="Europe/Berlin",
    )
    [alert] = ruleset.evaluate(
        event("Delete Table", at=T0, event_id=7, workspace={"name": "shop"}), MemoryStateStore()
    )
    assert alert.title == "Literal {braces} stay {{ as written }}"
    assert alert.text == "t medium Literal {braces} stay {{ as written }} 1 1 {}\n11:00 CET shop test 7"


def test_default_title_and_text_and_newlines_in_titles(load_rules, event) -> None:
    ruleset = load_rules(
        """
        id: t
        title: Table deleted
        description: A table was deleted.
        severity: high
        match: {sel: {type: Delete Table}}
        ---
        id: u
        title: U
        severity: low
        match: {sel: {type: Delete Table}}
        alert:
          title: "{{ event.msg }}"
        """
    )
    alerts = ruleset.evaluate(event("Delete Table", msg="line one\nline two"), MemoryStateStore())
    assert [(a.title, a.text) for a in alerts] == [
        ("Table deleted", "A table was deleted."),
        ("line one line two", ""),
    ]


def test_a_live_event_missing_a_field_still_alerts(load_rules, event) -> None:
    """A template that needs data.ip must not lose the alert (or stop the poll cycle) when data is absent."""
    ruleset = load_rules(
        """
        id: t
        title: Login failed
        description: Someone failed to log in.
        severity: low
        match: {sel: {type: Login Failed}}
        alert:
          title: "From {{ event.data.ip.upper() }}"
        tests:
          - {event: {type: Login Failed, data: {ip: 1.2.3.4}}, expect: {alerts: 1, titles: [From 1.2.3.4]}}
        """
    )
    [alert] = ruleset.evaluate(event("Login Failed", data=None), MemoryStateStore())
    assert alert.title == "Login failed"
    assert "template failed" in alert.text and alert.text.startswith("Someone failed to log in.")


def test_default_filter_covers_missing_and_null_objects(load_rules, event) -> None:
    ruleset = load_rules(
        """
        id: t
        title: T
        severity: low
        match: {sel: {type: Login}}
        alert:
          title: "{{ event.user.email | default('someone', true) }}"
        """
    )
    state = MemoryStateStore()
    titles = [
        a.title
        for e in (event(user=None), event(), event(user={"email": "a@corp.io"}))
        for a in ruleset.evaluate(e, state)
    ]
    assert titles == ["someone", "someone", "a@corp.io"]
