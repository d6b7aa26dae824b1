"""A plain (non-editable) install carries the bundled rule pack and templates and the console script."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_with_rules_and_templates(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    rules_in_repo = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "rules").rglob("*.y*ml"))
    templates_in_repo = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "templates").rglob("*.j2"))
    for name in rules_in_repo + templates_in_repo:
        assert f"monitor/_bundled/{name}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "audit-monitor = monitor.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    probe = (
        "import monitor.resources as r, pathlib;"
        "print(r.__file__); print(r.bundled_rules_dir());"
        "print(len(list(r.bundled_rules_dir().glob('*.y*ml'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert out[0].startswith(str(target)), "the installed copy, not the checkout, must be imported"
    assert out[1].startswith(str(target / "monitor" / "_bundled"))
    assert int(out[2]) == len([r for r in rules_in_repo if r.count("/") == 1])
