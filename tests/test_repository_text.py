"""The repository speaks of the project only: no account of who ran what when, no paths of one
machine that no user has. Every tracked text file is read (code, docs, run cards and run files)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Built from pieces so that this file does not match itself.
FORBIDDEN = {
    # one technical use is allowed: subprocess's ``start_new_sess…`` (a POSIX process group)
    "the word for a sitting of work": re.compile("(?<!start_new_)sess" + "ion", re.IGNORECASE),
    "a development-machine path": re.compile("|".join(
        re.escape(p) for p in ("/" + "work/", "/tmp" + "/ci", "/" + "home/", "/" + "root/"))),
}


def tracked_text_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the tracked files")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = []
    for name in names.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and b"\0" not in path.read_bytes()[:8192]:
            files.append(path)
    return files


def test_no_tracked_file_names_a_sitting_or_a_machine_path():
    hits = []
    for path in tracked_text_files():
        rel = path.relative_to(ROOT).as_posix()
        for what, pattern in FORBIDDEN.items():
            if pattern.search(rel):
                hits.append(f"{rel}: file name has {what}")
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for what, pattern in FORBIDDEN.items():
                if pattern.search(line):
                    hits.append(f"{rel}:{number}: {what}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits[:50]) + (f"\n... and {len(hits) - 50} more" if len(hits) > 50 else "")


def test_the_pattern_catches_what_it_must():
    assert FORBIDDEN["the word for a sitting of work"].search("in the last Sess" + "ion")
    assert not FORBIDDEN["the word for a sitting of work"].search("Popen(argv, start_new_sess" + "ion=True)")
    assert FORBIDDEN["a development-machine path"].search("--data-dir /" + "work/shared/data")
    assert not FORBIDDEN["a development-machine path"].search("--data-dir ../shared/data")
