"""The project documents itself: every relative link in docs/ and the README resolves (file and
#anchor, GitHub's heading slugs), every docs/ section the code cites exists, and nothing in the
repository points at documents a user of the repository does not have."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SOURCES = [p for pattern in ("*.py", "*.md", "*.toml", "Makefile") for p in ROOT.rglob(pattern)
           if not {".venv", ".git", "build"} & set(p.relative_to(ROOT).parts) and "egg-info" not in str(p)]


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    """Anchors of every heading of `md` outside code blocks."""
    text = re.sub(r"```.*?```", "", md.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, flags=re.M)}


def test_every_relative_link_resolves():
    broken, n = [], 0
    for md in [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]:
        text = re.sub(r"```.*?```", "", md.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            n += 1
            path, _, frag = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            if not dest.exists() or (frag and frag not in anchors(dest)):
                broken.append(f"{md.name}: {target}")
    assert n > 20 and not broken, broken


def test_cited_physics_sections_exist():
    numbered = {m.group(1) for m in re.finditer(r"^#{2,4}\s+(\d+(?:\.\d+)?)\.?\s", (DOCS / "physics.md").read_text(),
                                                flags=re.M)}
    cited = {}
    for p in SOURCES:
        for m in re.finditer(r"docs/physics\.md,? sections? (\d+(?:\.\d+)?)(?:\s*(?:and|-|,)\s*(\d+(?:\.\d+)?))?",
                             p.read_text(errors="replace")):
            for sec in filter(None, m.groups()):
                cited.setdefault(sec, str(p.relative_to(ROOT)))
    assert len(cited) > 5
    missing = {sec: where for sec, where in cited.items() if sec not in numbered}
    assert not missing, missing


def test_nothing_points_outside_the_repository():
    bad = []
    for p in SOURCES:
        if p.is_relative_to(DOCS) or p == Path(__file__).resolve():
            continue
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            if "../shared" in line or re.search(r"(?<![\w/])(physics|design|style)\.md", line):
                bad.append(f"{p.relative_to(ROOT)}:{i}")
    assert not bad, bad
