"""SIGHUP re-reads the config's rules section: a `rules.disable` entry naming no rule is refused, logged,
and the running rules stay in force (a real daemon subprocess against the simulator on 127.0.0.1).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

from monitor.simulator import Simulator
from tests.ops.conftest import RULE, Daemon, query, wait_until, write_config


def test_sighup_with_an_unknown_disabled_rule_keeps_the_old_rules(
    sim: Simulator, tmp_path: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "ops.yml").write_text(RULE, encoding="utf-8")
    db = tmp_path / "a.db"
    config = write_config(tmp_path / "c.yaml", sim, db, rules=rules)
    daemon = daemon_factory(config)
    daemon.wait_event("poll cycle", 20)

    # A typo meant to switch the rule off: it must not load as "nothing disabled".
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace(
            f"rules: {{paths: [{rules}]}}", f"rules: {{paths: [{rules}], disable: [ops.table-delte]}}"
        ),
        encoding="utf-8",
    )
    daemon.signal(signal.SIGHUP)
    failed = daemon.wait_event("rules reload failed; the previous rules stay in force", 15)[0]
    assert failed["rules_in_force"] == 1
    assert any(
        f"{config}:11: rules.disable[0]: no rule has the id 'ops.table-delte'" in error
        for error in failed["errors"]
    ), failed["errors"]

    deleted = sim.add_event("Delete Table", user={"id": 2, "email": "bo@corp.io"})
    fired = wait_until(
        lambda: query(db, "SELECT rule_id FROM alerts WHERE event_ids = ?", (json.dumps([deleted]),)),
        15,
        "the old rule's alert",
    )
    assert fired == [("ops.table-delete",)]
