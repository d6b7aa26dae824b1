"""What several benchmarks share: running a command with its own peak RSS, and the machine's description.

Peak RSS comes from ``os.wait4`` on the one child: ``RUSAGE_CHILDREN`` would add every earlier child of
the process (an archive builder, another command), and takes no account of which child it was. One
caveat remains: a child started by fork or vfork inherits its parent's high-water mark until ``exec``,
(with vfork, the parent's whole high-water mark), so the figure can never be below the parent's peak
RSS at the time of the spawn. ``run_measured`` records that peak too, and the benchmarks keep their own
process small (big work such as building an archive happens in a separate process, big imports too).
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class MeasuredRun:
    argv: list[str]
    returncode: int
    seconds: float
    # User + system time of the child and the children it waited for: the work, whatever the load.
    cpu_seconds: float
    # The high-water RSS of the child, or of a child of its own if larger (ru_maxrss, KiB on Linux).
    peak_rss_mb: float
    # This process's peak RSS when it spawned the child: the floor of peak_rss_mb.
    parent_peak_rss_mb: float
    stdout: str
    stderr: str

    def check(self) -> MeasuredRun:
        """Raise with the command's stderr when it failed; return self otherwise."""
        if self.returncode != 0:
            raise SystemExit(f"{' '.join(self.argv)} exited with {self.returncode}:\n{self.stderr[-3000:]}")
        return self


def own_peak_rss_mb() -> float:
    """This process's high-water RSS so far (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_measured(
    argv: list[str],
    *,
    timeout: float = 3600,
    on_spawn: Callable[[int], object] | None = None,
) -> MeasuredRun:
    """Run ``argv`` to completion; its wall time and peak RSS. Output goes to files, so no pipe fills up.

    ``on_spawn`` is called with the child's pid as soon as it runs (to sample it from /proc, say).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        parent_peak = own_peak_rss_mb()
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=err)
        if on_spawn is not None:
            on_spawn(child.pid)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                child.send_signal(signal.SIGKILL)
                os.wait4(child.pid, 0)
                raise SystemExit(f"{' '.join(argv)} did not finish within {timeout:.0f} s")
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        return MeasuredRun(
            argv=argv,
            returncode=child.returncode,
            seconds=seconds,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            peak_rss_mb=usage.ru_maxrss / 1024,
            parent_peak_rss_mb=parent_peak,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
        )


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15) -> int:
    """Stop a daemon as an operator does: SIGTERM, up to ``grace`` seconds to finish its cycle and exit,
    then SIGKILL. Its exit status (negative: the signal that ended it)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


def monitor_command(config: Path, *args: str) -> list[str]:
    """``audit-monitor --config CONFIG ARGS`` with this interpreter (the venv's, whatever PATH says)."""
    return [sys.executable, "-m", "monitor", "--config", str(config), *args]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    """One line: CPU, cores, memory, Python, OS, the time and the load (the machine may be shared)."""
    try:
        memory_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        memory = f", {memory_kib / 2**20:.0f} GB RAM"
    except (OSError, StopIteration):
        memory = ""
    load = ", load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    return (
        f"{cpu_model()}, {os.cpu_count()} cores{memory}; Python {platform.python_version()}; "
        f"{platform.system()} {platform.release()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC{load}"
    )
