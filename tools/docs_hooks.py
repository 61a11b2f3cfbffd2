"""MkDocs hooks: the command-line reference is generated from ``noprop``'s own argument parser at
every build, so docs/cli.md cannot drift from the options the CLI accepts."""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- cli-reference -->"


def cli_reference() -> str:
    """Markdown of ``noprop --help`` and of ``noprop COMMAND --help`` for every command."""
    os.environ["COLUMNS"] = "100"  # argparse wraps help text to the terminal width; fix it
    from noprop.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["## noprop", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in commands.choices.items():
        parts += [f"## noprop {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
