"""README's "Guarantees" table and SECURITY.md say which tests prove each promise: every file and test they
name must exist, and a test named after a file (``tests/x.py::test_y``, or ``test_y`` / ``::test_y`` right
after it) must be defined in that file: a renamed or deleted test would leave a promise citing nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CITED_FILE = re.compile(r"(tests/[\w/]+\.py)(?:::(test_\w+))?$")
CITED_TEST = re.compile(r"::?(test_\w+)$|(test_\w+)$")


def citations(doc: Path) -> list[tuple[str, str | None]]:
    """(file, test or None) for each backticked citation; a bare test name is in the last file named."""
    found: list[tuple[str, str | None]] = []
    last_file: str | None = None
    for token in re.findall(r"`([^`\n]+)`", doc.read_text(encoding="utf-8")):
        cited = CITED_FILE.match(token)
        if cited:
            last_file = cited.group(1)
            found.append((last_file, cited.group(2)))
            continue
        bare = CITED_TEST.match(token)
        if bare and last_file is not None:
            found.append((last_file, bare.group(1) or bare.group(2)))
    return found


@pytest.mark.parametrize("doc", ["README.md", "SECURITY.md"])
def test_every_cited_test_exists_in_the_cited_file(doc: str) -> None:
    cited = citations(REPO / doc)
    assert len(cited) >= 20, "the citations were not found: has the format changed?"
    missing = []
    for file, test in cited:
        path = REPO / file
        if not path.is_file():
            missing.append(file)
        elif test is not None and not re.search(rf"^def {test}\(", path.read_text(encoding="utf-8"), re.M):
            missing.append(f"{file}::{test}")
    assert missing == [], f"{doc} cites what does not exist"
