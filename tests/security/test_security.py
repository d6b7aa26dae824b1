"""The security claims of SECURITY.md, end to end.

One deployment (module fixture) runs the real daemon path, ``audit-monitor run --once --log-level debug`` in a
subprocess, three times against the simulator over HTTP, a Slack Web API stub and a real SMTP server
(aiosmtpd), with distinctive fake secrets given through ``${VAR}`` and ``VAR_FILE``:

1. everything fails near a secret: an expired Xano token (401), Slack ``invalid_auth``, a wrong SMTP password;
2. everything works (and a hostile event is delivered through a Slack incoming webhook and email);
3. the webhook's host is down (the webhook URL, itself a secret, is next to a connection error).

Each run also delivers through a signed webhook (its URL, secret, previous secret and an API-key header
are secrets), Teams (the Workflows URL) and PagerDuty (the routing key): refused (401/500/400) in run 1,
accepted in run 2, unreachable in run 3.

Then ``status`` (table and ``--json``), ``export`` (csv, jsonl), ``report`` and ``verify`` run, and every byte
they and the daemon produced is scanned for the secrets, with the SQLite files. Other tests: hostile event
text arrives inert in Slack and in the email HTML; template sandbox escapes fail ``rules check``; TLS
verification of the Xano source and Slack; file modes; default bind addresses.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import secrets
import signal
import ssl
import stat
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme

from monitor.alerts.outbox import DeliveryError
from monitor.alerts.slack import SlackChannel
from monitor.config import Config, ConfigError, parse_config
from monitor.poller import Poller
from monitor.simulator import Simulator
from monitor.store import Store
from tests.alerts.alerts_support import (
    SMTP_PASSWORD,
    Receiver,
    Reply,
    SlackRequest,
    SlackStub,
    all_strings,
    api_error,
    free_port,
    make_alert,
    start_smtp,
)
from tests.conftest import FakeClock
from tests.security.security_support import REPO, PageServer, cli, forms, leaks

# The SMTP server below requires AUTH without TLS on purpose (a wrong password must fail near the secret).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

SUFFIX = secrets.token_hex(6)
XANO_EXPIRED = f"xmt-SECRET+expired/{SUFFIX}"  # + and / change under URL encoding
XANO_TOKEN = f"xmt-SECRET+good/{SUFFIX}"
SLACK_TOKEN = f"xoxb-SECRET-slack-{SUFFIX}"
SMTP_WRONG = f"smtp-SECRET wrong+pw/{SUFFIX}"
HOOK_SECRET = "whsec_" + base64.b64encode(f"SECRET-hook-{SUFFIX}-0123456789".encode()).decode()
HOOK_PREVIOUS = "whsec_" + base64.b64encode(f"SECRET-old-hook-{SUFFIX}-01234567".encode()).decode()
HOOK_API_KEY = f"mk-SECRET-apikey-{SUFFIX}"
HOOK_PATH = f"/hooks/catch/SECRETzap{SUFFIX}/"
TEAMS_SIG = f"SECRETteamsSig{SUFFIX}"
PD_KEY = f"R0UTE-SECRET-pd-{SUFFIX}"
# The test SMTP server accepts user "monitor" with alerts_support's password.
SMTP_GOOD = SMTP_PASSWORD

HOSTILE_MSG = (
    "HOSTILE <!channel> <!here> @channel <@U024BE7LH> <#C123|general> <https://evil.example/x|click here> "
    '*bold* _it_ ~gone~ <script>alert(1)</script> "><img src=x onerror=alert(1)> & done'
)
HOSTILE_EMAIL = "<!everyone>@evil.example"
FORMULA_MSG = '=HYPERLINK("https://evil.example/steal","click")'
PROBE_RULE = """\
id: sec.probe
title: Probe
severity: high
match:
  probe: {type: Sec Probe}
alert:
  title: "Probe by {{ event.user.email }}: {{ event.msg }}"
  text: "{{ event.msg }} (user {{ event.user.email }}, workspace {{ event.workspace.name }})"
"""


@dataclass
class Deployment:
    tmp: Path
    db: Path
    webhook_url: str
    artefacts: dict[str, bytes] = field(default_factory=dict)  # name -> every byte to scan
    runs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    receivers: dict[str, Receiver] = field(default_factory=dict)  # webhook, teams, pagerduty (run 2)
    slack_posts: list[SlackRequest] = field(default_factory=list)
    emails: list[EmailMessage] = field(default_factory=list)

    @property
    def secrets(self) -> dict[str, str]:
        return {
            "xano token (expired)": XANO_EXPIRED,
            "xano token": XANO_TOKEN,
            "slack token": SLACK_TOKEN,
            "smtp password (wrong)": SMTP_WRONG,
            "smtp password": SMTP_GOOD,
            "slack webhook url": self.webhook_url,
            "slack webhook path": urllib.parse.urlsplit(self.webhook_url).path,
            "webhook secret": HOOK_SECRET,
            "webhook previous secret": HOOK_PREVIOUS,
            "webhook header value": HOOK_API_KEY,
            "webhook url path": HOOK_PATH,
            "teams workflows sig": TEAMS_SIG,
            "pagerduty routing key": PD_KEY,
        }


def config_text(
    db: Path,
    sim: Simulator,
    rules: Path,
    smtp_port: int,
    slack: str,
    out_dir: Path,
    token: str = "${XANO_TOKEN}",  # noqa: S107 - a reference to the environment, not a value
) -> str:
    return f"""\
state: {{path: {db}}}
sources:
  - name: sim
    base_url: {sim.base_url}
    token: {token}
    per_page: 200
    plan_retention: 60d
rules: {{paths: [{rules}]}}
alerts:
  console: false
  min_severity: low
  slack: {slack}
  email:
    smtp: {{host: 127.0.0.1, port: {smtp_port}, security: none, username: monitor,
            password: "${{SMTP_PASSWORD}}", timeout: 5s}}
    from: monitor@example.com
    to: [security@example.com]
    min_severity: low
  webhooks:
    - {{name: zap, url: "${{HOOK_URL}}", secret: "${{HOOK_SECRET}}", previous_secret: "${{HOOK_PREVIOUS}}",
       headers: {{x-make-apikey: "${{HOOK_API_KEY}}"}}, min_severity: low, timeout: 2s}}
  teams: {{webhook_url: "${{TEAMS_URL}}", min_severity: low, timeout: 2s}}
  pagerduty: {{routing_key: "${{PD_KEY}}", base_url: "${{PD_BASE}}", min_severity: low, timeout: 2s}}
report: {{out_dir: {out_dir}}}
server: {{listen: ""}}
"""


def secret_file(path: Path, value: str) -> str:
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("deployment")
    db = tmp / "data" / "audit.db"
    rules = tmp / "rules.yml"
    rules.write_text(PROBE_RULE, encoding="utf-8")
    reports = tmp / "reports"
    slack = SlackStub()
    slack.thread.start()
    smtp = start_smtp(require_auth=True)
    webhook_url = f"http://127.0.0.1:{slack.port}/services/T0SEC/B0SEC/SECRETwebhook{SUFFIX}"
    now = datetime.now(UTC)
    sim = Simulator(
        seed=5,
        token=XANO_TOKEN,
        history_start=now - timedelta(hours=12),
        events_per_day=80,
        live_background=False,
    )
    sim.start()
    deployment = Deployment(tmp, db, webhook_url)
    hook, teams, pagerduty = Receiver().start(), Receiver().start(), Receiver(Reply(202, "{}")).start()
    deployment.receivers = {"webhook": hook, "teams": teams, "pagerduty": pagerduty}

    def channel_env(up: bool) -> dict[str, str]:
        """The new channels' secrets; ``up`` False points them at a port where nothing listens."""
        port = free_port()
        hook_port, teams_port, pd_port = (hook.port, teams.port, pagerduty.port) if up else (port, port, port)
        return {
            "HOOK_URL": f"http://127.0.0.1:{hook_port}{HOOK_PATH}",
            "HOOK_SECRET": HOOK_SECRET,
            "HOOK_PREVIOUS": HOOK_PREVIOUS,
            "HOOK_API_KEY": HOOK_API_KEY,
            "TEAMS_URL": f"http://127.0.0.1:{teams_port}/workflows/abc/triggers/manual/run?sig={TEAMS_SIG}",
            "PD_KEY": PD_KEY,
            "PD_BASE": f"http://127.0.0.1:{pd_port}",
        }

    try:
        sim.add_event(
            "Sec Probe",
            msg=HOSTILE_MSG,
            user={"id": 9, "email": HOSTILE_EMAIL},
            workspace={"id": 1, "name": "<!subteam^S1|@oncall> ws"},
        )

        # Not matched by any rule: only the archive, the export and the report see it.
        sim.add_event(
            "Formula Probe", msg=FORMULA_MSG, user={"id": 9, "email": "=cmd|' /C calc'!A0@evil.example"}
        )

        def run_once(name: str, slack_yaml: str, env: dict[str, str]) -> None:
            config = tmp / f"{name}.yaml"
            config.write_text(config_text(db, sim, rules, smtp.port, slack_yaml, reports), encoding="utf-8")
            result = cli("--config", str(config), "run", "--once", "--log-level", "debug", cwd=tmp, env=env)
            deployment.runs.append(result)
            deployment.artefacts[f"{name} stdout"] = result.stdout.encode()
            deployment.artefacts[f"{name} stderr"] = result.stderr.encode()

        # 1. Every failure path at once: 401 from Xano, Slack invalid_auth, SMTP 535, and the receivers of
        # the webhook, Teams and PagerDuty refusing (401, 500, 400).
        slack.push(*[api_error("invalid_auth") for _ in range(5)])
        hook.push(*[Reply(401, "bad api key")] * 5)
        teams.push(*[Reply(500, "flow failed")] * 5)
        pagerduty.push(*[Reply(400, '{"status":"invalid event"}')] * 5)
        run_once(
            "failing",
            f'{{token: "${{SLACK_BOT_TOKEN}}", channel: "#sec", base_url: "{slack.base_url}", timeout: 5s}}',
            {
                "XANO_TOKEN": XANO_EXPIRED,
                "SLACK_BOT_TOKEN": SLACK_TOKEN,
                "SMTP_PASSWORD_FILE": secret_file(tmp / "smtp-wrong", SMTP_WRONG),
                **channel_env(up=True),
            },
        )
        for receiver in (hook, teams, pagerduty):
            receiver.script.clear()  # run 1 may not have used every scripted refusal
        # 2. Everything works: the archive fills, the hostile event alerts through the webhook and email.
        run_once(
            "working",
            '{webhook_url: "${SLACK_WEBHOOK_URL}", timeout: 5s}',
            {
                "XANO_TOKEN_FILE": secret_file(tmp / "xano-token", XANO_TOKEN),
                "SLACK_WEBHOOK_URL": webhook_url,
                "SMTP_PASSWORD": SMTP_GOOD,
                **channel_env(up=True),
            },
        )
        # 3. The webhook's host is down: the URL is a secret sitting next to a connection error.
        sim.add_event("Sec Probe", msg="second probe", user={"id": 9, "email": "probe@corp.io"})
        down = f"http://127.0.0.1:{free_port()}/services/T0SEC/B0SEC/SECRETwebhook{SUFFIX}"
        run_once(
            "webhook-down",
            '{webhook_url: "${SLACK_WEBHOOK_URL}", timeout: 2s}',
            {
                "XANO_TOKEN": XANO_TOKEN,
                "SLACK_WEBHOOK_URL": down,
                "SMTP_PASSWORD": SMTP_GOOD,
                **channel_env(up=False),
            },
        )

        config = tmp / "working.yaml"
        env = {
            "XANO_TOKEN": XANO_TOKEN,
            "SLACK_WEBHOOK_URL": webhook_url,
            "SMTP_PASSWORD": SMTP_GOOD,
            **channel_env(up=True),
        }
        month = now.strftime("%Y-%m")
        since, until = (
            (now - timedelta(days=2)).date().isoformat(),
            (now + timedelta(days=1)).date().isoformat(),
        )
        commands = {
            "status": ["status"],
            "status --json": ["status", "--json"],
            "dead-letters list": ["dead-letters", "list"],
            "channels list": ["channels", "list"],
            "export csv": ["export", "--since", since, "--until", until, "--out", str(tmp / "export.csv")],
            "export jsonl": [
                "export", "--since", since, "--until", until, "--format", "jsonl",
                "--out", str(tmp / "export.jsonl"),
            ],
            "report": ["report", "--month", month, "--out", str(reports)],
            "verify": ["verify"],
        }  # fmt: skip
        for name, args in commands.items():
            result = cli("--config", str(config), *args, cwd=tmp, env=env)
            assert result.returncode == 0, (name, result.stderr)
            deployment.runs.append(result)
            deployment.artefacts[f"{name} stdout"] = result.stdout.encode()
            deployment.artefacts[f"{name} stderr"] = result.stderr.encode()
        # A config error next to a secret: the secret sits in a key that rejects it.
        misplaced = tmp / "misplaced.yaml"
        misplaced.write_text(
            "timezone: ${SLACK_BOT_TOKEN}\n"
            "sources:\n  - name: s\n    base_url: http://x\n    token: t\n    backfill: ${XANO_TOKEN}\n"
            "server:\n  listen: ${SMTP_PASSWORD}\nreport:\n  schedule: ${XANO_TOKEN}\n",
            encoding="utf-8",
        )
        misplaced_env = {
            "SLACK_BOT_TOKEN": SLACK_TOKEN,
            "XANO_TOKEN": XANO_TOKEN,
            "SMTP_PASSWORD_FILE": str(tmp / "smtp-wrong"),
        }
        result = cli("--config", str(misplaced), "status", cwd=tmp, env=misplaced_env)
        assert result.returncode == 2, result.stderr
        deployment.artefacts["config error"] = (result.stdout + result.stderr).encode()

        for path in sorted([*db.parent.glob(db.name + "*"), *tmp.glob("export.*"), *reports.rglob("*")]):
            if path.is_file():
                deployment.artefacts[str(path.relative_to(tmp))] = path.read_bytes()
        deployment.slack_posts = slack.posts()
        deployment.emails = list(smtp.recorder.messages)
        yield deployment
    finally:
        sim.stop()
        for receiver in (hook, teams, pagerduty):
            receiver.stop()
        smtp.controller.stop()
        slack.server.shutdown()
        slack.server.server_close()


def test_the_deployment_exercised_the_failure_and_success_paths(deployment: Deployment) -> None:
    """The scan below is only worth something if the secrets were really used, and failed near errors."""
    failing, working, down = deployment.runs[:3]
    assert "Traceback" not in "".join(run.stdout + run.stderr for run in deployment.runs)
    assert failing.returncode == 1 and '"error_kind": "auth"' in failing.stdout
    assert "invalid_auth" in failing.stdout and "535" in failing.stdout  # Slack and SMTP refused the secrets
    assert working.returncode == 0, working.stdout[-2000:]
    assert "Unreachable" in down.stdout or "unreachable" in down.stdout
    assert deployment.artefacts["data/audit.db"].startswith(b"SQLite format 3")
    assert (
        b"HOSTILE" in deployment.artefacts["export.csv"]
        and b"HOSTILE" in deployment.artefacts["export.jsonl"]
    )
    assert any(name.endswith(".html") for name in deployment.artefacts)
    config_error = deployment.artefacts["config error"].decode()
    # The misplaced secrets are named by their variable instead of being echoed.
    assert "timezone: '${SLACK_BOT_TOKEN}' is not" in config_error, config_error
    assert "server.listen: '${SMTP_PASSWORD}' is not" in config_error, config_error
    status = deployment.artefacts["status stdout"].decode()
    assert "invalid_auth" in status or "535" in status  # the dead letters' errors are shown
    # The new channels refused, accepted and could not be reached: each secret was used near an error.
    letters = deployment.artefacts["dead-letters list stdout"].decode()
    for refusal in (
        "webhook zap answered HTTP 401",
        "Teams answered HTTP 500",
        "PagerDuty answered HTTP 400",
    ):
        assert refusal in failing.stdout or refusal in letters, refusal
    assert "webhook zap unreachable" in down.stdout and "PagerDuty unreachable" in down.stdout
    hook = deployment.receivers["webhook"]
    assert any(r.headers.get("x-make-apikey") == HOOK_API_KEY for r in hook.requests)  # really sent
    assert any(r.json().get("routing_key") == PD_KEY for r in deployment.receivers["pagerduty"].requests)


def test_no_secret_in_logs_errors_status_the_database_exports_or_reports(deployment: Deployment) -> None:
    assert not leaks(deployment.secrets, deployment.artefacts)
    # Nor in what reached Slack and the mailbox (the token travels only in the Authorization header).
    delivered = {f"slack post {n}": post.raw.encode() for n, post in enumerate(deployment.slack_posts)}
    delivered |= {f"email {n}": m.as_bytes() for n, m in enumerate(deployment.emails)}
    assert not leaks(deployment.secrets, delivered)


def test_the_scan_finds_a_secret_in_any_of_its_forms(deployment: Deployment) -> None:
    """A control: the scan is not blind. The secret files we wrote, and each transformed form, are found."""
    written = {"token file": (deployment.tmp / "xano-token").read_bytes()}
    assert leaks({"xano token": XANO_TOKEN}, written)
    for shape in forms(SLACK_TOKEN):
        assert leaks({"slack token": SLACK_TOKEN}, {"line": f"header: {shape}".encode()})


def _hostile_slack_post(deployment: Deployment) -> SlackRequest:
    posts = [post for post in deployment.slack_posts if "HOSTILE" in post.raw]
    assert posts, "the hostile event's alert did not reach Slack"
    return posts[0]


def test_event_text_is_inert_in_slack(deployment: Deployment) -> None:
    post = _hostile_slack_post(deployment)
    texts = list(all_strings(post.body))
    live = re.compile(r"<[!@#]|<https?:|<mailto:")
    assert not [text for text in texts if live.search(text)], texts
    assert any("&lt;!channel&gt;" in text for text in texts)  # shown, escaped, not dropped
    assert any("&lt;https://evil.example/x|click here&gt;" in text for text in texts)
    assert post.body.get("link_names") in (None, False, 0)  # "@channel" as text pings only with link_names
    assert post.body.get("unfurl_links") is False


def test_event_text_is_escaped_in_the_alert_email_html(deployment: Deployment) -> None:
    (message,) = [m for m in deployment.emails if "HOSTILE" in str(m["Subject"])]
    assert "\n" not in str(message["Subject"]) and "\r" not in str(message["Subject"])
    html_part = message.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content()
    for raw in ("<script>", "<img", "<!channel>", "<!everyone>"):
        assert raw not in html, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert (
        "&lt;img src=x onerror=alert(1)&gt;" in html
        or "&lt;img src=x onerror=alert(1)&gt;" in html.replace("&#34;", '"')
    )


def test_event_text_is_escaped_in_the_report_html(deployment: Deployment) -> None:
    html = b"".join(data for name, data in deployment.artefacts.items() if name.endswith(".html")).decode()
    assert HOSTILE_EMAIL not in html and "&lt;!everyone&gt;@evil.example" in html
    assert "<script>alert" not in html


def test_event_text_cannot_become_a_spreadsheet_formula_in_the_csv_export(deployment: Deployment) -> None:
    rows = list(csv.DictReader(io.StringIO(deployment.artefacts["export.csv"].decode())))
    (probe,) = [row for row in rows if row["type"] == "Formula Probe"]
    assert probe["msg"] == "'" + FORMULA_MSG
    assert probe["user.email"].startswith("'=cmd")


def test_database_exports_and_reports_are_private_files(deployment: Deployment) -> None:
    private = [deployment.db, deployment.tmp / "export.csv", deployment.tmp / "export.jsonl"]
    private += [p for p in (deployment.tmp / "reports").rglob("*") if p.is_file()]
    # SQLite creates -wal and -shm with the database file's mode; they hold the same rows.
    private += [p for p in deployment.db.parent.glob(deployment.db.name + "-*")]
    modes = {str(p.relative_to(deployment.tmp)): oct(stat.S_IMODE(p.stat().st_mode)) for p in private}
    assert modes and all(mode == "0o600" for mode in modes.values()), modes


def test_the_wal_and_shm_files_sqlite_creates_beside_the_archive_are_0600_too(tmp_path: Path) -> None:
    """They exist while the store is open (and vanish at a clean close), holding the newest rows."""
    previous = os.umask(0o022)  # the usual umask: a file created without a mode would be 0644
    try:
        with Store.open(tmp_path / "a.db") as store:
            with store.transaction():
                store.set_meta("probe", "x")
            sidecars = [tmp_path / "a.db-wal", tmp_path / "a.db-shm"]
            assert all(path.exists() for path in sidecars)
            assert [oct(stat.S_IMODE(path.stat().st_mode)) for path in sidecars] == ["0o600", "0o600"]
    finally:
        os.umask(previous)


# --- the template sandbox at `rules check` ------------------------------------------------------------

ESCAPES = {
    "class": "{{ event.__class__ }}",
    "mro": "{{ ''.__class__.mro() }}",
    "subclasses": "{{ event.__class__.__mro__[1].__subclasses__() }}",
    "cycler-globals": "{{ cycler.__init__.__globals__.os }}",
    "joiner-globals": "{{ joiner.__init__.__globals__ }}",
    "lipsum-globals": "{{ lipsum.__globals__['os'] }}",
    "template-reference": "{{ self._TemplateReference__context }}",
    "method-globals": "{{ event.get.__globals__ }}",
    "getitem": "{{ event['__class__'] }}",
    "attr-filter": "{{ event|attr('__class__') }}",
    "attr-computed": "{{ event|attr('__cla' ~ 'ss__') }}",
    "map-attribute": "{{ [event]|map(attribute='__class__')|list }}",
    "format-field": "{{ '{0.__class__}'.format(event) }}",
    "set-block": "{% set c = event.__class__ %}{{ c }}",
    "loop": "{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}",
}


def test_rules_check_refuses_every_sandbox_escape_naming_the_file_and_rule(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    for name, template in ESCAPES.items():
        (folder / f"{name}.yml").write_text(
            f"id: escape.{name}\ntitle: t\nseverity: high\nmatch:\n  a: {{type: Login}}\n"
            f"alert:\n  text: {yaml_quote(template)}\n",
            encoding="utf-8",
        )
    result = cli("rules", "check", str(folder), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    for name in ESCAPES:
        matching = [
            line for line in lines if line.startswith(f"{folder / name}.yml:") and f"escape.{name}:" in line
        ]
        assert matching and "refused by the sandbox" in matching[0], (name, result.stdout)


def yaml_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- TLS ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    """A server context with a certificate for 127.0.0.1 from a CA the system does not trust; its bundle."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return context, str(bundle)


def test_a_source_over_tls_verifies_the_certificate_unless_ca_file_trusts_it(
    test_ca: tuple[ssl.SSLContext, str], tmp_path: Path
) -> None:
    """Through the daemon's own client factory (config -> XanoClient), not a hand-built client."""
    context, bundle = test_ca
    server = PageServer(tls=context)
    server.pages = [[{"id": 1, "created_at": "2026-03-04T10:00:00Z", "type": "Login"}]]
    try:
        for ca_file, ok in ((None, False), (bundle, True)):
            config = Config.model_validate(
                {
                    "state": {"path": str(tmp_path / f"{ok}.db")},
                    "sources": [
                        {"name": "tls", "base_url": server.url, "token": "t0ken", "ca_file": ca_file}
                    ],
                }
            )
            with Store.open(config.state.path) as store:
                result = Poller(
                    store, config, None, clock=FakeClock(datetime(2026, 3, 4, 11, tzinfo=UTC))
                ).poll(config.sources[0])
                assert result.ok is ok, result.error
                if not ok:
                    assert result.error_kind == "unavailable" and "CERTIFICATE_VERIFY_FAILED" in str(
                        result.error
                    )
                    assert store.event_count() == 0
        assert server.requests == 1  # the untrusted handshake never carried a request (nor the token)
    finally:
        server.close()


def test_slack_verifies_the_certificate_by_default(
    test_ca: tuple[ssl.SSLContext, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    context, bundle = test_ca
    stub = SlackStub()
    stub.server.socket = context.wrap_socket(stub.server.socket, server_side=True)
    stub.thread.start()
    base_url = f"https://127.0.0.1:{stub.port}/api/"
    slack_yaml = f'{{token: "{SLACK_TOKEN}", channel: "#sec", base_url: "{base_url}", timeout: 5s}}'
    slack_config = parse_config(f"alerts: {{slack: {slack_yaml}}}", "t.yaml", {}).alerts.slack
    try:
        channel = SlackChannel(slack_config, UTC)  # type: ignore[arg-type]
        with pytest.raises(DeliveryError) as refused:
            channel.send(make_alert())
        assert refused.value.permanent and "certificate not trusted" in str(refused.value)
        assert stub.posts() == []
        # Slack has no ca_file: a private CA is trusted the OpenSSL way, through SSL_CERT_FILE.
        monkeypatch.setenv("SSL_CERT_FILE", bundle)
        assert SlackChannel(slack_config, UTC).send(make_alert())  # type: ignore[arg-type]
        assert len(stub.posts()) == 1
    finally:
        stub.server.shutdown()
        stub.server.server_close()


# --- default bind addresses --------------------------------------------------------------------------------


def test_the_simulator_binds_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    with Simulator(events_per_day=0, incidents=False) as sim:
        assert sim.base_url.startswith("http://127.0.0.1:")
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "simulate", "--port", "0"],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert re.match(r"Xano simulator listening on http://127\.0\.0\.1:\d+$", first.strip()), first
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_the_http_endpoint_listens_on_loopback_unless_told_otherwise() -> None:
    assert Config().server.listen.startswith("127.0.0.1:")
    file_without_server = "sources: []\n"
    assert parse_config(file_without_server, "a.yaml", {}).server.listen == "127.0.0.1:9108"
    # The container image opts in to all interfaces through the environment (a file's value still wins).
    image = {"AUDIT_MONITOR_LISTEN": "0.0.0.0:9108"}
    assert parse_config(file_without_server, "a.yaml", image).server.listen == "0.0.0.0:9108"
    assert parse_config("server: {listen: '127.0.0.1:1'}\n", "a.yaml", image).server.listen == "127.0.0.1:1"
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert "AUDIT_MONITOR_LISTEN=0.0.0.0:9108" in dockerfile.replace('"', "")


def test_the_image_api_token_comes_from_the_environment_unless_the_file_sets_tokens(tmp_path: Path) -> None:
    file_without_tokens = "sources: []\n"
    image = {"AUDIT_MONITOR_LISTEN": "0.0.0.0:9108", "AUDIT_MONITOR_API_TOKEN": "e" * 24}
    (token,) = parse_config(file_without_tokens, "a.yaml", image).server.tokens
    assert (token.name, token.role, token.token.get_secret_value()) == ("api", "viewer", "e" * 24)
    secret = tmp_path / "api_token"
    secret.write_text("f" * 24 + "\n", encoding="utf-8")
    from_file = {"AUDIT_MONITOR_API_TOKEN_FILE": str(secret)}
    (token,) = parse_config(file_without_tokens, "a.yaml", from_file).server.tokens
    assert token.token.get_secret_value() == "f" * 24
    # The file's own tokens win (an empty list too: the operator said "no tokens").
    own = "server: {tokens: [{name: ops, token: '" + "o" * 24 + "'}]}\n"
    assert [t.name for t in parse_config(own, "a.yaml", image).server.tokens] == ["ops"]
    assert parse_config("server: {tokens: []}\n", "a.yaml", image).server.tokens == []
    # A short token is refused naming the variable, never showing the value.
    with pytest.raises(ConfigError) as short:
        parse_config(file_without_tokens, "a.yaml", {"AUDIT_MONITOR_API_TOKEN": "tiny-secret"})
    assert "AUDIT_MONITOR_API_TOKEN" in str(short.value) and "tiny-secret" not in str(short.value)
