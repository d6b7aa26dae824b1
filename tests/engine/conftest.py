"""Fixtures of the rule-engine tests: rules from YAML text, events from a few keywords."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.engine import RuleLoadError, RuleSet, load_ruleset
from monitor.events import AuditEvent, normalize

T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)  # a Wednesday in business hours


@pytest.fixture
def load_rules(tmp_path: Path) -> Callable[..., RuleSet]:
    """Write YAML text to a file and load it (keyword arguments go to load_ruleset)."""
    counter = itertools.count(1)

    def load(text: str, **kwargs: Any) -> RuleSet:
        path = tmp_path / f"rules{next(counter)}.yml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return load_ruleset([path], **kwargs)

    return load


@pytest.fixture
def load_errors(tmp_path: Path) -> Callable[..., list[str]]:
    """Load YAML text that must fail; return its errors with the file name shortened to ``r.yml``."""

    def errors(text: str, **kwargs: Any) -> list[str]:
        path = tmp_path / "r.yml"
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        with pytest.raises(RuleLoadError) as caught:
            load_ruleset([path], **kwargs)
        return [line.replace(str(path), "r.yml") for line in caught.value.errors]

    return errors


@pytest.fixture
def event() -> Callable[..., AuditEvent]:
    """``event("Login Failed", at=T0, user={"id": 1, "email": "a@corp.io"})``; ids count up."""
    counter = itertools.count(1)

    def make(
        event_type: str = "Login", *, at: datetime = T0, event_id: int | None = None, **raw: Any
    ) -> AuditEvent:
        entry = {
            "id": event_id if event_id is not None else next(counter),
            "created_at": at.isoformat(),
            "type": event_type,
            **raw,
        }
        return normalize("test", entry)

    return make
