"""The README stays a short front door and the documentation's relative links resolve.

Pure file reads: README.md and docs/*.md are scanned for Markdown links and images; external
(http/https/mailto) links and pure #anchors are skipped, the #fragment of the rest is stripped
and the target must exist relative to the linking file. Fragments pointing into a Markdown file
must name one of its headings (GitHub's anchor rules).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 200

DOC_FILES = [README, *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); the target ends at whitespace (an optional "title" follows)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans (links there are not links)."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def _links(path: Path) -> list[str]:
    return _LINK.findall(_prose(path.read_text(encoding="utf-8")))


def _is_external(target: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) is not None  # http:, https:, mailto:, …


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', -1, -2 for repeats."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}); move details into docs/"
    )


def test_doc_files_found():
    assert README.exists()
    assert len(DOC_FILES) > 1, "no docs/*.md pages found"


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc: Path):
    broken = []
    for target in _links(doc):
        if _is_external(target) or target.startswith("#"):
            continue
        rel = unquote(target.split("#", 1)[0])
        if not (doc.parent / rel).exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(REPO)}: links to missing files: {broken}"


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_anchors_resolve(doc: Path):
    broken = []
    for target in _links(doc):
        if _is_external(target) or "#" not in target:
            continue
        rel, fragment = target.split("#", 1)
        dest = (doc.parent / unquote(rel)) if rel else doc
        if dest.suffix != ".md" or not dest.is_file():
            continue  # a missing file is reported by test_relative_links_resolve
        if unquote(fragment).lower() not in _anchors(dest):
            broken.append(target)
    assert not broken, f"{doc.relative_to(REPO)}: anchors without a heading: {broken}"
