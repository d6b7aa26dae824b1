"""`make bench`: run every benchmark in turn. Figures are recorded by hand in bench/RESULTS.md."""

from __future__ import annotations

import subprocess
import sys

BENCHES = ["bench.bench_ingest", "bench.bench_rules", "bench.bench_report"]

if __name__ == "__main__":
    failed = [name for name in BENCHES if subprocess.run([sys.executable, "-m", name], check=False).returncode]
    sys.exit(1 if failed else 0)
