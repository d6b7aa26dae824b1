"""Fixtures of the report tests: the fixture month in a fresh archive, and a real SMTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from report_data import Mailbox, fill_fixture, fixture_config, free_port

from monitor.config import Config
from monitor.store import Store


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return fixture_config(tmp_path)


@pytest.fixture
def store(config: Config) -> Iterator[Store]:
    with Store.open(config.state.path) as opened:
        fill_fixture(opened)
        yield opened


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox("127.0.0.1", free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port, data_size_limit=50 * 1024 * 1024)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
