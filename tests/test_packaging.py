"""A plain (non-editable) install carries the bundled rule pack and templates and the console script."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
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
            str(out),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("*.whl")
    return built


def test_wheel_installs_with_rules_and_templates(wheel: Path, tmp_path: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    rules_in_repo = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "rules").rglob("*.y*ml"))
    templates_in_repo = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "templates").rglob("*.j2"))
    for name in rules_in_repo + templates_in_repo:
        assert f"monitor/_bundled/{name}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "audit-monitor = monitor.__main__:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

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

    # The schema revisions ship too: the installed copy creates an archive at the current schema.
    migrations = ROOT / "monitor" / "store" / "migrations"
    for path in migrations.rglob("*.py"):
        assert path.relative_to(ROOT).as_posix() in names
    created = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, monitor.store as s; st = s.Store.open(sys.argv[1]); "
            "print(s.__file__, st.conn.execute('PRAGMA user_version').fetchone()[0], s.SCHEMA_VERSION)",
            str(tmp_path / "a.db"),
        ],
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert created[0].startswith(str(target))
    assert created[1] == created[2] != "0"


def test_wheel_metadata_names_the_license_urls_and_classifiers(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    metadata_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(archive.read(metadata_name).decode())
    # The MIT licence pyproject declares, shipped with its text.
    assert metadata["License-Expression"] == "MIT"
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License") and "Permission is hereby granted" in license_text
    shipped = next(n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE"))
    assert archive.read(shipped).decode() == license_text
    # Project URLs point into the repository's own documents (no public host exists yet).
    urls = dict(value.split(", ", 1) for value in metadata.get_all("Project-URL") or [])
    assert {"Documentation", "Security"} <= set(urls)
    for target in urls.values():
        assert "://" not in target and (ROOT / target.split("#")[0]).is_file(), target
    classifiers = metadata.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Programming Language :: Python :: 3.12" in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    assert any(c.startswith("Topic :: System :: Monitoring") for c in classifiers)


def test_a_report_worker_imports_neither_the_cli_nor_the_configuration() -> None:
    """A report's worker processes (multiprocessing, spawn) import the parent's main module, then the store
    or the export: neither may pull in the command line or the configuration's models, ~1 s and ~40 MB a
    worker on a small machine (bench/RESULTS.md)."""
    probe = (
        "import sys, monitor.__main__, monitor.store, monitor.export; "
        "print(sorted({m.split('.')[0] if not m.startswith('monitor') else m for m in sys.modules} "
        "& {'pydantic', 'jinja2', 'click', 'httpx', 'monitor.cli', 'monitor.config', 'monitor.report'}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]", done.stdout
