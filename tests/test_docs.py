"""Every "theory §n" citation in the repository resolves to a numbered heading of docs/theory.md,
and every repository path the README and the theory page name exists."""

import re

import pytest
from helpers import REPO

THEORY = REPO / "docs" / "theory.md"
CITED = ("ufmflow", "tests", "examples", "benchmarks")


def _headings() -> set[str]:
    found = set()
    for line in THEORY.read_text().splitlines():
        m = re.match(r"#{2,4} (\d+(?:\.\d+)*)\.? ", line)
        if m:
            found.add(m.group(1))
    return found


def _citations():
    files = [REPO / "README.md"] + [p for d in CITED for p in (REPO / d).rglob("*.py")]
    for path in files:
        for number in re.findall(r"theory §(\d+(?:\.\d+)*)", path.read_text()):
            yield path.relative_to(REPO), number


def test_theory_page_has_numbered_sections():
    headings = _headings()
    assert {str(i) for i in range(1, 8)} <= headings


@pytest.mark.parametrize("path,number", sorted(set(_citations())), ids=str)
def test_citation_resolves(path, number):
    assert number in _headings(), f"{path} cites theory §{number}, which docs/theory.md lacks"


def test_named_repository_paths_exist():
    pattern = r"`((?:ufmflow|tests|examples|benchmarks|docs)/[\w/.\-]+\.(?:py|md|json|txt))"
    missing = set()
    for doc in (REPO / "README.md", THEORY):
        for rel in re.findall(pattern, doc.read_text()):
            if not (REPO / rel).exists():
                missing.add(f"{doc.name}: {rel}")
    assert not missing, sorted(missing)
