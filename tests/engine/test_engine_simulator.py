"""The bundled pack over the simulator's five weeks of team traffic: every planted incident, nothing else."""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.engine import MemoryStateStore, load_ruleset
from monitor.events import normalize
from monitor.resources import bundled_rules_dir
from monitor.simulator import Simulator

NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)

# What the pack should say about each kind of planted incident (at least these rules).
EXPECTED = {
    "failed_login_burst": {"xano.auth.failed-login-burst"},
    "ip_spray": {"xano.auth.password-spray"},
    "bulk_delete": {"xano.activity.bulk-delete"},
    "off_hours_delete": {"xano.activity.off-hours-change", "xano.table.deleted"},
    "workspace_destruction": {"xano.workspace.deleted", "xano.workspace.reset"},
    "security_policy": {"xano.security.policy-updated"},
    "rbac_change": {"xano.rbac.permissions-updated"},
    "first_admin_action": {"xano.admin.first-action"},
    "foreign_user": {"xano.user.created", "xano.user.created-outside-domains"},
    "token_events": {"xano.token.changed"},
    "live_branch": {"xano.branch.live-changed"},
    "env_var_change": {"xano.env-var.changed"},
    "user_admin": {"xano.user.created", "xano.user.deleted"},
    "table_delete": {"xano.table.deleted"},
}


def test_the_pack_finds_every_planted_incident_and_nothing_else() -> None:
    sim = Simulator(seed=7, clock=lambda: NOW)
    ruleset = load_ruleset(
        [bundled_rules_dir()],
        default_timezone="Europe/Berlin",
        lists={"allowed_email_domains": ["northwind.io", "northwind-labs.de"]},
    )
    state = MemoryStateStore()
    alerts = [a for entry in sim.visible_events() for a in ruleset.evaluate(normalize("sim", entry), state)]
    assert {incident.kind for incident in sim.incidents} == set(EXPECTED)
    for incident in sim.incidents:
        ids = set(incident.event_ids)
        fired = {a.rule_id for a in alerts if ids & set(a.event_ids)}
        assert EXPECTED[incident.kind] <= fired, (incident.kind, incident.description, fired)
    planted = set().union(*(set(incident.event_ids) for incident in sim.incidents))
    assert [a.title for a in alerts if not planted & set(a.event_ids)] == []  # ordinary work stays quiet
