"""Fixtures for the alert tests: real loopback servers (see alerts_support.py), a store on a temp file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alerts_support import Receiver, RecordingServer, SlackStub, SmtpServer, TlsFiles, start_smtp

from monitor.store import Store


@pytest.fixture
def slack() -> Iterator[SlackStub]:
    stub = SlackStub()
    stub.thread.start()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


@pytest.fixture
def elsewhere() -> Iterator[RecordingServer]:
    server = RecordingServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return TlsFiles(tmp_path)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_smtp()
    yield server
    server.controller.stop()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "monitor.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store.open(db_path) as opened:
        yield opened


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook / Teams / PagerDuty receiver on 127.0.0.1 that records requests."""
    server = Receiver().start()
    yield server
    server.stop()
