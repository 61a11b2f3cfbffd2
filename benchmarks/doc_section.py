"""Rewrite the part of a docs page between two markers: how benchmark scripts publish their tables."""

from __future__ import annotations

from pathlib import Path


def write_section(doc: Path, start: str, end: str, section: str) -> None:
    """Replace everything from ``start`` to ``end`` (markers included) in ``doc`` with ``section``,
    which must begin with ``start`` and end with ``end`` itself."""
    text = doc.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{doc} lacks the markers {start} ... {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(head + section + tail)
