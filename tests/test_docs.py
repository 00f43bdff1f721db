"""The README and the documentation site: short README, the two commands, a command reference that
covers every sub-command of the real parser, no tracker numbers in user docs, no dangling links.

Fast and MkDocs-free: the site itself is built by ``mkdocs build --strict`` in scripts/test.sh.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

from vidtune.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def _hook():
    spec = importlib.util.spec_from_file_location("vidtune_docs_hook", DOCS / "hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _user_docs() -> list[Path]:
    return [README] + sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every sub-command path of ``parser``, walked independently of the renderer."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(prefix + (name,))
                found += _commands(sub, prefix + (name,))
    return found


def test_readme_is_short_and_has_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 400
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text
    assert (ROOT / "scripts" / "demo.sh").is_file() and (ROOT / "scripts" / "test.sh").is_file()
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "mkdocs build --strict" in (ROOT / "scripts" / "test.sh").read_text()


def test_reference_covers_every_sub_command():
    reference = _hook().render_reference()
    commands = _commands(build_parser())
    assert {("train",), ("index", "build"), ("index", "merge"), ("serve",), ("tag",)} <= set(commands)
    headings = set(re.findall(r"^#{2,6} (vidtune(?: [\w-]+)*)$", reference, flags=re.M))
    missing = [" ".join(c) for c in commands if "vidtune " + " ".join(c) not in headings]
    assert not missing, f"commands missing from the generated reference: {missing}"
    # options and their help come from the parser too
    assert "`--temporal TEMPORAL`" in reference and "`--kind KIND`" in reference
    assert "<!-- vidtune-cli-reference -->" in (DOCS / "reference" / "cli.md").read_text()


def test_reference_picks_up_newly_registered_commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.add_parser("zz-new", help="a command another module registered")
    p.add_argument("--level", type=int, default=3, help="how much (default %(default)s)")
    inner = p.add_subparsers(dest="inner").add_parser("deeper", help="nested | piped")
    inner.add_argument("target")
    reference = _hook().render_reference(parser)
    assert "## vidtune zz-new" in reference and "### vidtune zz-new deeper" in reference
    assert "how much (default 3)" in reference
    assert "nested \\| piped" in reference  # escaped, so it cannot split a table cell


def test_user_docs_have_no_tracker_numbers():
    pattern = re.compile(r"\bissues?\s*#?\d+|\bparts? \d+(-\d+)? of\b", re.I)
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in _user_docs()
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not hits, "user docs speak of tracker issues:\n" + "\n".join(hits)


def test_nav_pages_exist():
    config = (ROOT / "mkdocs.yml").read_text()
    nav = [re.sub(r"\s+#.*$", "", line) for line in config[config.index("\nnav:"):].splitlines()
           if not line.lstrip().startswith("#")]
    pages = re.findall(r":\s*([\w/.-]+\.md)\s*$", "\n".join(nav), flags=re.M)
    assert "reference/cli.md" in pages and "index.md" in pages
    assert [p for p in pages if not (DOCS / p).is_file()] == []


@pytest.mark.parametrize("page", _user_docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_code_fences_are_closed(page):
    """An unclosed fence turns the rest of a page into one code block, which --strict does not catch."""
    fences = [line for line in page.read_text(encoding="utf-8").splitlines() if line.lstrip().startswith("```")]
    assert len(fences) % 2 == 0, f"{page.name}: {len(fences)} code fence lines"


@pytest.mark.parametrize("page", _user_docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    """Links between pages (and to images) point at files that exist, also when read on GitHub."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:|#", target):
            continue
        path = target.split("#")[0]
        if path.startswith("bench-results/"):  # published from bench/results/ by the hook
            resolved = ROOT / "bench" / "results" / path.split("/", 1)[1]
        else:
            resolved = page.parent / path
        if not resolved.exists():
            bad.append(target)
    assert not bad, f"{page.name}: links to missing files: {bad}"
