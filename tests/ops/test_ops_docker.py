"""The image, without Docker (it cannot run here): the Dockerfile's instructions are parsed and the
commands the container runs are run directly: `audit-monitor run` configured the way the image
configures it (AUDIT_MONITOR_CONFIG, AUDIT_MONITOR_LISTEN, *_FILE secrets), and the HEALTHCHECK command
against that live daemon.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import yaml

from monitor.simulator import Simulator
from tests.ops.conftest import REPO, Daemon, wait_until

Instruction = tuple[str, str]


def instructions() -> list[Instruction]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def one(keyword: str) -> str:
    (args,) = [a for k, a in instructions() if k == keyword]
    return args


def env_vars() -> dict[str, str]:
    values: dict[str, str] = {}
    for keyword, args in instructions():
        if keyword == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                values[key] = value
    return values


def healthcheck() -> tuple[dict[str, str], list[str]]:
    args = one("HEALTHCHECK")
    options, _, command = args.partition(" CMD ")
    parsed = dict(opt.removeprefix("--").split("=", 1) for opt in options.split())
    return parsed, json.loads(command)


def test_the_image_is_slim_non_root_with_state_on_a_volume() -> None:
    keywords = [k for k, _ in instructions()]
    # Pinned to a patch release: a rebuild gets the same interpreter, and a bump is a reviewed change.
    assert keywords[0] == "FROM" and re.fullmatch(r"python:3\.1[12]\.\d+-slim(-[a-z]+)?", one("FROM"))
    user = one("USER").split(":")[0]
    assert user not in ("root", "0") and keywords.index("USER") < keywords.index("CMD")
    assert json.loads(one("VOLUME")) == ["/data"] and one("WORKDIR") == "/data"
    env = env_vars()
    assert env["AUDIT_MONITOR_CONFIG"] == "/data/audit-monitor.yaml"
    assert env["AUDIT_MONITOR_LISTEN"] == "0.0.0.0:9108"  # noqa: S104 - the container's endpoint
    assert one("EXPOSE") == "9108"
    assert json.loads(one("CMD")) == ["audit-monitor", "run"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["audit-monitor"] == "monitor.__main__:main"
    # The package is installed from the copied source, not in editable mode.
    installs = [a for k, a in instructions() if k == "RUN" and "pip install" in a]
    assert installs and all("-e" not in shlex.split(a) and "--editable" not in a for a in installs)
    options, _ = healthcheck()
    assert {"interval", "timeout", "start-period", "retries"} <= set(options)


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [shlex.split(a)[:-1] for k, a in instructions() if k == "COPY"]
    sources = [s for group in copies for s in group]
    assert {"pyproject.toml", "README.md", "monitor", "rules", "templates"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    # What the wheel build needs is all there: hatch's force-include names rules/ and templates/.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    force = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert set(force["force-include"]) <= set(sources)
    # The build refuses to run without the licence files pyproject names.
    assert set(pyproject["project"]["license-files"]) <= set(sources)


def test_compose_example_is_valid_and_uses_file_secrets() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.example.yml").read_text())
    service = compose["services"]["audit-monitor"]
    assert "audit-data:/data" in service["volumes"]
    file_vars = {k: v for k, v in service["environment"].items() if k.endswith("_FILE")}
    assert file_vars and all(v.startswith("/run/secrets/") for v in file_vars.values())
    assert set(service["secrets"]) == set(compose["secrets"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_healthcheck(url: str) -> subprocess.CompletedProcess[str]:
    _, command = healthcheck()
    assert command[0] == "python"
    return subprocess.run(
        [sys.executable, *command[1:]],
        env={**os.environ, "AUDIT_MONITOR_HEALTHCHECK_URL": url},
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_the_container_command_and_its_healthcheck(sim: Simulator, tmp_path: Path, token: str) -> None:
    # The image's layout: the config in /data (here: the working directory), no server.listen in it,
    # the token from a secret file.
    data = tmp_path / "data"
    data.mkdir()
    (data / "audit-monitor.yaml").write_text(
        f"state: {{path: {data / 'audit-monitor.db'}}}\n"
        "sources:\n"
        f"  - {{name: sim, base_url: '{sim.base_url}', token: '${{XANO_META_TOKEN}}', poll_interval: 2s}}\n"
        "alerts: {console: false}\n"
        "server: {stale_after: 3s}\n",
        encoding="utf-8",
    )
    secret = tmp_path / "xano_meta_token"
    secret.write_text(token + "\n", encoding="utf-8")  # as `docker secret` / kubectl write it
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    env = {
        "AUDIT_MONITOR_CONFIG": str(data / "audit-monitor.yaml"),
        "AUDIT_MONITOR_LISTEN": f"127.0.0.1:{port}",
        "XANO_META_TOKEN_FILE": str(secret),
    }
    # Exactly the image's CMD, the console script installed with the package.
    command = json.loads(one("CMD"))
    argv = [str(Path(sys.executable).parent / command[0]), *command[1:]]
    daemon = Daemon(data / "audit-monitor.yaml", data, env, argv=argv)
    try:
        assert daemon.base_url == f"http://127.0.0.1:{port}"
        healthy = wait_until(
            lambda: (r := run_healthcheck(url)).returncode == 0 and r, 20, "a passing healthcheck"
        )
        assert json.loads(healthy.stdout)["status"] == "ok"
        sim.stop()
        failing = wait_until(
            lambda: (r := run_healthcheck(url)).returncode == 1 and r, 20, "a failing healthcheck"
        )
        assert json.loads(failing.stdout)["status"] == "unhealthy"
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
        assert run_healthcheck(url).returncode == 1  # nothing listening: the check fails, not hangs
        assert token not in daemon.stdout_path.read_text()
    finally:
        daemon.stop()


def readme_docker_run() -> list[str]:
    """The `docker run` command of the README's Deployment section, as argv (continuation lines joined)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    deployment = readme[readme.index("## Deployment") :]
    block = deployment[deployment.index("```sh") : deployment.index("```", deployment.index("```sh") + 5)]
    joined = block.replace("\\\n", " ")
    (line,) = [ln for ln in joined.splitlines() if ln.strip().startswith("docker run")]
    return shlex.split(line, comments=True)


def test_the_readme_docker_run_starts_a_working_daemon(sim: Simulator, tmp_path: Path, token: str) -> None:
    """The README's first-run command, mount by mount and variable by variable, on this machine: the config
    the user mounts is the one found, the token given with -e is the one used, the daemon turns healthy."""
    argv = readme_docker_run()
    assert argv[:2] == ["docker", "run"] and argv[-1] == "xano-audit-monitor"
    mounts: dict[str, str] = {}
    passed: list[str] = []
    args = iter(argv[2:-1])
    for arg in args:
        if arg in ("-v", "--volume"):
            host, container, *_ = next(args).split(":")
            mounts[container] = host
        elif arg in ("-e", "--env"):
            passed.append(next(args))
        elif arg in ("--name", "-p", "--publish"):
            next(args)
    config_mount = next(c for c, h in mounts.items() if h.endswith("audit-monitor.yaml"))
    assert mounts.get("/data") == "audit-data", "the state volume"
    # Host side: the user's working directory holding audit-monitor.yaml; /data a fresh volume.
    cwd, data = tmp_path / "home", tmp_path / "volume"
    cwd.mkdir()
    data.mkdir()
    (cwd / "audit-monitor.yaml").write_text(
        f"state: {{path: {data / 'audit-monitor.db'}}}\n"
        "sources:\n"
        f"  - {{name: prod, base_url: '{sim.base_url}', token: '${{XANO_META_TOKEN}}', poll_interval: 2s}}\n"
        "alerts: {console: false}\n"
        "server: {stale_after: 3s}\n",
        encoding="utf-8",
    )
    env = dict(env_vars())  # the image's ENV, then the command's -e on top
    exported = {"XANO_META_TOKEN": token, "AUDIT_MONITOR_API_TOKEN": secrets.token_hex(24)}
    for item in passed:
        name, sep, value = item.partition("=")
        # `-e NAME` passes the user's exported value: the simulator's token, a fresh API token.
        assert sep or name in exported, item
        env[name] = value if sep else exported[name]
    assert env["AUDIT_MONITOR_CONFIG"] == config_mount, "the image must read the mounted file"
    port = free_port()
    env["AUDIT_MONITOR_CONFIG"] = str(cwd / "audit-monitor.yaml")  # the mount's host side
    # The image's address (all interfaces) on a free port: it starts only because the command gives a token.
    assert env["AUDIT_MONITOR_LISTEN"] == "0.0.0.0:9108"  # noqa: S104 - the image's endpoint
    env["AUDIT_MONITOR_LISTEN"] = f"0.0.0.0:{port}"
    command = json.loads(one("CMD"))
    daemon = Daemon(
        cwd / "audit-monitor.yaml",
        data,
        env,
        argv=[str(Path(sys.executable).parent / command[0]), *command[1:]],
    )
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        wait_until(lambda: run_healthcheck(url).returncode == 0, 20, "a passing healthcheck")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
    finally:
        daemon.stop()


def test_the_image_address_needs_an_api_token_and_its_healthcheck_none(
    sim: Simulator, tmp_path: Path, token: str
) -> None:
    """The image listens on 0.0.0.0: without any API token `run` refuses to start (exit 2, saying how to fix
    it); with AUDIT_MONITOR_API_TOKEN_FILE it starts, the HEALTHCHECK and /metrics need no token, the API
    answers that token."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "audit-monitor.yaml").write_text(
        f"state: {{path: {data / 'audit-monitor.db'}}}\n"
        "sources:\n"
        f"  - {{name: sim, base_url: '{sim.base_url}', token: '${{XANO_META_TOKEN}}', poll_interval: 2s}}\n"
        "alerts: {console: false}\n",
        encoding="utf-8",
    )
    port = free_port()
    env = {
        **env_vars(),
        "AUDIT_MONITOR_CONFIG": str(data / "audit-monitor.yaml"),
        "AUDIT_MONITOR_LISTEN": f"0.0.0.0:{port}",
        "XANO_META_TOKEN": token,
    }
    command = json.loads(one("CMD"))
    argv = [str(Path(sys.executable).parent / command[0]), *command[1:]]
    refused = subprocess.run(
        argv, env={**os.environ, **env}, cwd=data, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2, refused.stderr
    for words in ("server.listen", "server.tokens", "AUDIT_MONITOR_API_TOKEN", "127.0.0.1"):
        assert words in refused.stderr
    assert "Traceback" not in refused.stderr

    api_token = secrets.token_hex(24)
    secret = tmp_path / "api_token"
    secret.write_text(api_token + "\n", encoding="utf-8")
    daemon = Daemon(
        data / "audit-monitor.yaml", data, {**env, "AUDIT_MONITOR_API_TOKEN_FILE": str(secret)}, argv=argv
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: run_healthcheck(base + "/healthz").returncode == 0, 30, "a passing healthcheck")
        assert httpx.get(base + "/metrics").status_code == 200
        assert httpx.get(base + "/api/v1/status").status_code == 401
        status = httpx.get(base + "/api/v1/status", headers={"Authorization": f"Bearer {api_token}"})
        assert status.status_code == 200, status.text
        assert api_token not in daemon.stdout_path.read_text() + daemon.stderr_path.read_text()
    finally:
        daemon.stop()


def test_the_compose_example_documents_secret_file_ownership() -> None:
    """Compose bind-mounts file secrets with the host's owner and mode; the image's user must read them."""
    uid = one("USER").split(":")[0]
    compose_text = (REPO / "docker-compose.example.yml").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for text in (compose_text, readme):
        assert f"chown {uid}:{uid} secrets/*" in text and "chmod 0400 secrets/*" in text
