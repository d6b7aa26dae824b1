"""The report's read-ahead (monitor/store/files.py, ``read_ahead``): a cold archive file is asked of the
kernel in chunks, newest part first, and only when it fits well in the memory free.

Whether the pages are in the page cache is read with util-linux's ``fincore`` (part of every Debian
system), after emptying the cache for the file with ``POSIX_FADV_DONTNEED``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from monitor.store import files

SIZE = 4 << 20  # 32 chunks


def write_file(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        handle.write(os.urandom(size))
        handle.flush()
        os.fsync(handle.fileno())


def resident_bytes(path: Path) -> int:
    done = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


def evict(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


@pytest.fixture
def cold_archive(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("fincore") is None or not hasattr(os, "posix_fadvise"):
        pytest.skip("needs util-linux's fincore and posix_fadvise (Linux)")
    archive, wal = tmp_path / "archive.db", tmp_path / "archive.db-wal"
    write_file(archive, SIZE)
    write_file(wal, SIZE // 4)
    for path in (archive, wal):
        evict(path)
        if resident_bytes(path) != 0:
            pytest.skip(f"the page cache cannot be emptied for {path} (a memory file system)")
    return archive, wal


def test_a_cold_archive_and_its_wal_are_loaded_into_the_page_cache(cold_archive: tuple[Path, Path]) -> None:
    archive, wal = cold_archive
    assert files.read_ahead(str(archive)) == SIZE + SIZE // 4
    deadline = time.monotonic() + 10
    while resident_bytes(archive) < SIZE or resident_bytes(wal) < SIZE // 4:
        assert time.monotonic() < deadline, (
            f"after the read-ahead, {resident_bytes(archive)} of {SIZE} bytes in the cache"
        )
        time.sleep(0.05)


def test_a_stopped_read_ahead_asks_for_nothing(cold_archive: tuple[Path, Path]) -> None:
    stop = threading.Event()
    stop.set()
    assert files.read_ahead(str(cold_archive[0]), stop) == 0
    time.sleep(0.2)
    assert resident_bytes(cold_archive[0]) == 0


def test_an_archive_too_large_for_the_memory_free_is_not_read_ahead(
    cold_archive: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, wal = cold_archive
    both = SIZE + SIZE // 4
    monkeypatch.setattr(files, "cache_room", lambda: int(both / files.READ_AHEAD_SHARE) - 1)
    assert files.read_ahead(str(archive)) == 0
    monkeypatch.setattr(files, "cache_room", lambda: int(both / files.READ_AHEAD_SHARE) + 1)
    assert files.read_ahead(str(archive)) == both


def test_without_posix_fadvise_or_a_memory_figure_nothing_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "archive.db"
    write_file(archive, 1024)
    monkeypatch.setattr(files, "cache_room", lambda: None)  # not Linux
    assert files.read_ahead(str(archive)) == 0
    monkeypatch.setattr(files, "cache_room", lambda: 1 << 30)
    monkeypatch.delattr(os, "posix_fadvise", raising=False)
    assert files.read_ahead(str(archive)) == 0


def test_the_memory_free_is_the_machines_or_less() -> None:
    if not Path("/proc/meminfo").exists():
        pytest.skip("/proc/meminfo is Linux's")
    total = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    room = files.cache_room()
    assert room is not None and 0 <= room <= total
