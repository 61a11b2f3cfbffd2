"""The docs site builds from a clean tree with ``mkdocs build --strict``: a broken link, a missing
anchor, an API page naming an object that no longer exists, or a CLI reference that cannot be
generated fails the build, and so this test."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]


def needs_mkdocs() -> None:
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail('mkdocs is missing: pip install -e ".[dev]" installs it')
        pytest.skip('mkdocs is not installed (pip install -e ".[docs]")')


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    needs_mkdocs()
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_every_nav_page_is_built_and_linked_from_the_home_page(site: Path):
    home = (site / "index.html").read_text()
    for page in ["reproduction", "benchmarks", "cli", "api/classifier", "api/methods", "changelog"]:
        assert (site / f"{page}.html").is_file(), page
        assert f'href="{page}.html"' in home, f"{page} is not in the navigation"


def test_api_reference_documents_the_public_objects(site: Path):
    classifier = (site / "api" / "classifier.html").read_text()
    anchors = ["noprop.api.Classifier.fit", "noprop.api.Classifier.predict", "noprop.api.Classifier.save"]
    for anchor in anchors:
        assert f'id="{anchor}"' in classifier, anchor
    methods = (site / "api" / "methods.html").read_text()
    assert 'id="noprop.methods.base.Method"' in methods
    assert 'id="noprop.methods.dt.NoPropDT"' in methods


def test_cli_reference_holds_every_command_of_the_parser(site: Path):
    from noprop.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    cli = (site / "cli.html").read_text()
    for name in commands:
        assert f'id="noprop-{name.replace("_", "-")}"' in cli, name
    assert "--data-dir" in cli and "--max-train-seconds" in cli


class _Links(HTMLParser):
    """Every ``href``/``src`` of a page and every ``id`` it defines."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.targets.append(value)
            elif name == "id" and value:
                self.ids.add(value)


def test_every_link_of_the_built_site_reaches_a_page_and_its_anchor(site: Path):
    """What a reader clicking through the site would hit: every relative link and asset of every
    built page (navigation, page bodies, run cards, API pages) resolves to a file of the site, and
    every ``#anchor`` to an id on the target page."""
    pages = {p: _Links() for p in site.rglob("*.html")}
    for page, links in pages.items():
        links.feed(page.read_text())
    broken = []
    for page, links in pages.items():
        for target in links.targets:
            parts = urlsplit(target)
            if parts.scheme or parts.netloc or target.startswith(("mailto:", "javascript:")):
                continue
            base = site if parts.path.startswith("/") else page.parent  # the 404 page links from the root
            path = (base / unquote(parts.path).lstrip("/")).resolve() if parts.path else page
            if path.is_dir():
                path = path / "index.html"
            if not path.is_file():
                broken.append(f"{page.relative_to(site)}: {target}")
            elif parts.fragment and path.suffix == ".html" and path in pages \
                    and unquote(parts.fragment) not in pages[path].ids:
                broken.append(f"{page.relative_to(site)}: {target} (no such anchor)")
    assert not broken, "\n".join(broken[:20])
