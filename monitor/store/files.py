"""The archive's files on disk: the writer lock beside it, their modes, and how a reader opens a copy.

SQL stays in the store's other modules; this one only deals with the file system around the SQLite file.

- **One writer.** Every process that polls or delivers (``run``, ``run --once``, ``demo``) holds an exclusive
  ``flock`` on ``<archive>.lock`` for its whole life, the file holding its pid. Two writers would share the
  one ``staging`` table and the outbox (each walk clears its source's staged pages; outbox rows are not
  claimed), losing events and sending every alert twice. The kernel drops the lock when the holder dies,
  even by ``kill -9``, so a crash never blocks the next start. The lock file is never deleted: removing it
  while another process waits on it would let two holders lock two different files.
- **Modes.** The archive names users and IP addresses: at start a writer takes every group and other
  permission off the archive, its ``-wal`` and ``-shm`` files and its folder (0600 and 0700 for the usual
  0644 and 0755), whatever they were created with.
- **Read-ahead.** A report of a large month asks the kernel to load the archive file ahead of its reads
  (``read_ahead``), when the file fits well in the memory free.
- **Read-only copies.** Read commands open the archive with ``mode=ro``; on a location they cannot write
  (a read-only folder or file, a read-only mount) also ``immutable=1``, so SQLite needs no ``-wal``/``-shm``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("monitor.store")

LOCK_SUFFIX = ".lock"
ARCHIVE_FILE_MODE = 0o600
STATE_FOLDER_MODE = 0o700
_GROUP_AND_OTHER = 0o077


class ArchiveLocked(Exception):
    """Another process holds the archive's writer lock (the message names its pid and the lock file)."""

    def __init__(self, archive: str, lock_path: str, holder: int | None) -> None:
        self.archive, self.lock_path, self.holder = archive, lock_path, holder
        who = f"process {holder}" if holder is not None else "another process (pid not yet written)"
        super().__init__(
            f"{archive}: the archive is in use by {who} (lock {lock_path}); only one `run`, `run --once` "
            "or `demo` may write an archive at a time. Read commands (status, verify, export, report) "
            "work beside it."
        )


class WriterLock:
    """The exclusive lock on ``<archive>.lock``; held until ``release()`` or the process ends.

    Not ``held`` only for an archive on a read-only file system, where no process can write it."""

    def __init__(self, archive: str, lock_path: str, descriptor: int | None) -> None:
        self.archive, self.lock_path = archive, lock_path
        self._descriptor: int | None = descriptor

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def release(self) -> None:
        if self._descriptor is not None:
            # Closing the descriptor drops the flock; the file stays (see the module docstring).
            os.close(self._descriptor)
            self._descriptor = None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_path_for(archive: str | os.PathLike[str]) -> str:
    return f"{archive}{LOCK_SUFFIX}"


def acquire_writer_lock(archive: str | os.PathLike[str]) -> WriterLock:
    """Take the archive's writer lock or raise ``ArchiveLocked`` naming the holder's pid.

    Creates the archive's folder (0700) and the lock file (0600) when they do not exist yet; raises
    ``OSError`` when they cannot be created.
    """
    archive_text = str(archive)
    lock_path = lock_path_for(archive_text)
    folder = Path(archive_text).parent
    if not folder.exists():
        folder.mkdir(parents=True, mode=STATE_FOLDER_MODE, exist_ok=True)
    try:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, ARCHIVE_FILE_MODE)
        record_pid = True
    except OSError as exc:
        if exc.errno == errno.EROFS and not os.path.exists(lock_path):
            # On a read-only file system nobody can write the archive, so there is nothing to exclude: go on
            # without a lock, and every write fails naming the cause (as on a disk that turns read-only).
            log.warning("archive on a read-only file system: no writer lock taken", extra={"path": lock_path})
            return WriterLock(archive_text, lock_path, None)
        if exc.errno not in (errno.EROFS, errno.EACCES) or not os.path.exists(lock_path):
            raise
        # The archive's location turned read-only (a remounted disk): flock needs no write access, so the
        # lock still keeps a second writer out, and this one goes on to fail its cycles naming the cause,
        # as a running daemon does when its disk turns read-only. The pid in the file is then a past one.
        descriptor = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
        record_pid = False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(descriptor)
            raise
        holder = _read_holder(descriptor)
        os.close(descriptor)
        raise ArchiveLocked(archive_text, lock_path, holder) from None
    if record_pid:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
    return WriterLock(archive_text, lock_path, descriptor)


def _read_holder(descriptor: int) -> int | None:
    """The pid the holder wrote; it writes it just after locking, so a fresh lock may need a moment."""
    for _ in range(20):
        text = os.pread(descriptor, 32, 0).decode("ascii", errors="replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.05)
    return None


# --- file modes ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModeChange:
    path: str
    before: int
    after: int


def tighten_modes(archive: str | os.PathLike[str]) -> list[ModeChange]:
    """Take every group and other permission off the archive, its -wal/-shm files, the lock and the
    archive's folder (0644 becomes 0600, 0755 becomes 0700); return what changed.

    Only bits are taken away, never added: an archive its owner made read-only (0444) becomes 0400 and the
    writer then fails loudly, rather than being made writable behind the owner's back. A folder that others
    share by design (sticky bit, such as /tmp) is left alone with a warning: making it 0700 would break every
    other user of it. A mode that cannot be changed (another owner) is a warning, not a failure.
    """
    archive_text = str(archive)
    changes: list[ModeChange] = []
    files = [archive_text + suffix for suffix in ("", "-wal", "-shm", LOCK_SUFFIX)]
    folder = str(Path(archive_text).resolve().parent)
    for path in [*files, folder]:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue
        before = stat.S_IMODE(info.st_mode)
        wanted = before & ~_GROUP_AND_OTHER
        if before == wanted:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX:
            log.warning(
                "state folder is shared (sticky bit); its mode is left as it is",
                extra={"path": path, "mode": f"{before:04o}"},
            )
            continue
        try:
            os.chmod(path, wanted)
        except OSError as exc:
            log.warning(
                "cannot tighten the mode of an archive file",
                extra={
                    "path": path,
                    "mode": f"{before:04o}",
                    "wanted": f"{wanted:04o}",
                    "error": exc.strerror,
                },
            )
            continue
        changes.append(ModeChange(path, before, wanted))
        log.info(
            "archive file mode tightened",
            extra={"path": path, "mode_before": f"{before:04o}", "mode": f"{wanted:04o}"},
        )
    return changes


# --- identity: was the archive deleted or replaced under us? ---------------------------------------------


@dataclass(frozen=True)
class FileIdentity:
    device: int
    inode: int

    @classmethod
    def of(cls, path: str) -> FileIdentity:
        info = os.stat(path)
        return cls(info.st_dev, info.st_ino)


def identity_problem(path: str, opened: FileIdentity) -> str | None:
    """Why ``path`` is no longer the file opened as ``opened`` (deleted, replaced), or None."""
    try:
        now = FileIdentity.of(path)
    except FileNotFoundError:
        return f"{path}: the archive file was deleted while the monitor had it open; not recreating it"
    except OSError as exc:
        return f"{path}: cannot check the archive file: {exc.strerror}"
    if now != opened:
        return (
            f"{path}: the archive file was replaced while the monitor had it open "
            f"(inode {opened.inode} became {now.inode}); not writing to either"
        )
    return None


# --- read-only opening ----------------------------------------------------------------------------------


def _writable(path: str) -> bool:
    """Writable by this process, judged by the permission bits too: root may write anything, but a copy
    whose owner took away every write bit is meant to stay as it is, and that is honoured for root too."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    return os.access(path, os.W_OK) and bool(info.st_mode & 0o222)


def readonly_uri(path: str) -> str:
    """The ``file:`` URI a read command opens ``path`` with.

    ``mode=ro`` always. ``immutable=1`` as well when the folder or the file is not writable: SQLite then
    needs no -wal/-shm (it could not create them), and nothing can be writing that file. A copy that
    brought a non-empty -wal along is opened without ``immutable``, which would ignore the log's rows.
    """
    resolved = Path(path).resolve()
    uri = f"file:{_uri_path(str(resolved))}?mode=ro"
    wal = Path(f"{resolved}-wal")
    with contextlib.suppress(OSError):
        if wal.exists() and wal.stat().st_size > 0:
            return uri
    if not _writable(str(resolved.parent)) or not _writable(str(resolved)):
        uri += "&immutable=1"
    return uri


def _uri_path(path: str) -> str:
    # In a file: URI, '?' and '#' would start the query or the fragment, and '%' an escape.
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


# --- read-ahead: a cold archive read in large chunks ----------------------------------------------------

# SQLite reads a page (4 kB) at a time. The report's processes read the month from several places at once,
# so from a cold page cache they wait on many small reads: for the bench's 1 GB archive, 32.7 s instead of
# 27.6 s warm. The disk reads the whole file sequentially in ~2 s, so the report asks the kernel for it
# first, in chunks of this size: the kernel takes at most the device's read-ahead (often 128 kB) from one
# request and drops the rest of it.
READ_AHEAD_CHUNK = 128 << 10
# Only a file that takes at most this share of the memory free for the page cache: a larger one would
# evict its own first chunks (and the rest of the machine's cache) before they were read.
READ_AHEAD_SHARE = 0.5


def read_ahead(path: str, stop: threading.Event | None = None) -> int:
    """Ask the kernel to load the archive and its ``-wal`` into the page cache, the newest part (the end of
    the file, usually the month being reported) first. Returns the bytes asked for; 0 on a platform without
    ``posix_fadvise``, or when the files are too large for the memory free (``READ_AHEAD_SHARE``). Only
    advice: it never fails the caller, and ``stop`` ends it early."""
    advise = getattr(os, "posix_fadvise", None)
    room = cache_room()
    if advise is None or room is None:
        return 0
    sizes: dict[str, int] = {}
    for file in (path, f"{path}-wal"):
        with contextlib.suppress(OSError):  # no -wal (or the file gone): nothing to ask for
            sizes[file] = os.path.getsize(file)
    if sum(sizes.values()) > room * READ_AHEAD_SHARE:
        log.debug("archive too large to read ahead", extra={"bytes": sum(sizes.values()), "room": room})
        return 0
    asked = 0
    for file in reversed(list(sizes)):  # the -wal holds the newest pages
        try:
            descriptor = os.open(file, os.O_RDONLY)
        except OSError:
            continue
        try:
            end = sizes[file]
            while end > 0 and not (stop and stop.is_set()):
                start = max(0, end - READ_AHEAD_CHUNK)
                advise(descriptor, start, end - start, os.POSIX_FADV_WILLNEED)
                asked += end - start
                end = start
        except OSError as exc:  # advice refused (a file system without it): reading goes on as without
            log.debug("read-ahead refused", extra={"error": exc.strerror})
        finally:
            os.close(descriptor)
    return asked


def cache_room() -> int | None:
    """Bytes the page cache could take without evicting much: the kernel's MemAvailable, or less when a
    cgroup (a container's memory limit) leaves less. None where this cannot be told (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            available = next(
                int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:")
            )
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    with contextlib.suppress(OSError, ValueError, StopIteration):  # no cgroup v2 memory limit here
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            # The cgroup's own page cache can be evicted for ours: what it cannot give is its processes'
            # memory (anon).
            stat_lines = Path("/sys/fs/cgroup/memory.stat").read_text().splitlines()
            anon = next(int(line.split()[1]) for line in stat_lines if line.startswith("anon "))
            available = min(available, max(0, int(limit) - anon))
    return available
