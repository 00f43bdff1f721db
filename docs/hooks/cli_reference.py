"""MkDocs hooks for the vidtune site.

* The command reference is rendered from the argparse parsers themselves
  (``vidtune.cli.main.build_parser()``), so it always matches the installed CLI: a page holding the line
  ``<!-- vidtune-cli-reference -->`` gets one section per sub-command (nested ones such as
  ``index build`` included, and every command a module in ``COMMAND_MODULES`` registers).
* Benchmark plots live in ``bench/results/`` where the benchmarks write them; they are published under
  ``bench-results/`` instead of being copied into ``docs/``.
* Pages that exist in ``docs/`` but are not in ``nav`` are listed under "More topics", so a new page is
  always reachable from the navigation (move it into its section in ``mkdocs.yml``).

``render_reference()`` is also used by ``tests/test_docs.py``; it needs only the standard library and
``vidtune`` (not MkDocs).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

MARKER = "<!-- vidtune-cli-reference -->"
PROG = "vidtune"
ROOT = Path(__file__).resolve().parents[2]
BENCH_RESULTS = ROOT / "bench" / "results"
MORE_TOPICS = "More topics"


# -- walking the parser ---------------------------------------------------------------------------
def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each sub-command of ``parser``, in the order they were added."""
    for action in parser._actions:  # argparse keeps sub-commands only here; sphinx-argparse reads the same
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # an alias of a command already listed
                    continue
                seen.add(id(sub))
                yield name, helps.get(name, ""), sub


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str,
                                                                                          argparse.ArgumentParser]]:
    """Every sub-command, depth first: (("index", "build"), help, parser), ..."""
    for name, help_text, sub in _subparsers(parser):
        yield path + (name,), help_text, sub
        yield from walk(sub, path + (name,))


def command_paths(parser: argparse.ArgumentParser) -> list[str]:
    """``["info", "index", "index build", ...]``: every sub-command of ``parser``."""
    return [" ".join(p) for p, _, _ in walk(parser)]


# -- rendering ------------------------------------------------------------------------------------
def _escape(text: str) -> str:
    """Plain help text as Markdown: characters Markdown would read as markup are escaped."""
    text = " ".join(text.split())
    return re.sub(r"([\\`*_|<>\[\]#])", r"\\\1", text)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    formatter = parser._get_formatter()
    return formatter._expand_help(action)  # fills in %(default)s and friends, as --help does


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return action.metavar or action.dest
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    metavar = action.metavar or action.dest.upper()
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if action.choices is not None and action.metavar is None:
        metavar = "{" + ",".join(str(c) for c in action.choices) + "}"
    return ", ".join(f"{o} {metavar}" for o in action.option_strings)


def _default(action: argparse.Action) -> str:
    d = action.default
    if action.nargs == 0 or d is None or d == argparse.SUPPRESS or action.required or not action.option_strings:
        return ""
    if isinstance(d, (list, tuple)):
        d = ",".join(str(x) for x in d)
    return f"`{d}`" if str(d) else '`""`'


def _section(parser: argparse.ArgumentParser, path: tuple[str, ...], help_text: str) -> list[str]:
    name = " ".join((PROG,) + path)
    lines = [f"{'#' * min(len(path) + 1, 6)} {name}", ""]
    if help_text:
        lines += [_escape(help_text[:1].upper() + help_text[1:]) + ".", ""]
    if parser.description and parser.description != help_text:
        lines += [_escape(parser.description), ""]
    lines += ["```text", _usage(parser), "```", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if a.help != argparse.SUPPRESS and not isinstance(a, (argparse._HelpAction,
                                                                          argparse._SubParsersAction))]
        if not actions:
            continue
        lines += [f"**{_escape(group.title or 'options')}**", "", "| argument | default | description |",
                  "|---|---|---|"]
        for a in actions:
            lines.append(f"| `{_invocation(a)}` | {_default(a)} | {_escape(_help(parser, a))} |")
        lines.append("")
    subs = list(_subparsers(parser))
    if subs:
        lines += ["| sub-command | what it does |", "|---|---|"]
        lines += [f"| [`{name} {n}`](#{_anchor(path + (n,))}) | {_escape(h)} |" for n, h, _ in subs]
        lines.append("")
    return lines


def _usage(parser: argparse.ArgumentParser) -> str:
    """The usage line(s) without the ``usage: `` prefix, continuation lines dedented to match."""
    prefix = "usage: "
    text = parser.format_usage().rstrip()
    if text.startswith(prefix):
        text = text[len(prefix):]
    return "\n".join(line[len(prefix):] if i and line.startswith(" " * len(prefix)) else line
                     for i, line in enumerate(text.split("\n")))


def _anchor(path: tuple[str, ...]) -> str:
    """The id MkDocs' toc extension gives the heading ``vidtune index build``."""
    return "-".join((PROG,) + path).lower()


def render_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """The command reference as Markdown: global options, then one section per (nested) sub-command."""
    if parser is None:
        from vidtune.cli.main import build_parser

        parser = build_parser()
    top = list(_subparsers(parser))
    lines = ["Every command and option of the installed `vidtune`, rendered from its argument parser when "
             "this site is built (the same text as `vidtune COMMAND --help`).", "",
             "| command | what it does |", "|---|---|"]
    lines += [f"| [`{PROG} {n}`](#{_anchor((n,))}) | {_escape(h)} |" for n, h, _ in top]
    lines += ["", f"## {PROG}", "", "Options that come before the command.", "", "```text", _usage(parser),
              "```", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if a.help != argparse.SUPPRESS and not isinstance(a, (argparse._HelpAction,
                                                                          argparse._SubParsersAction))]
        if actions:
            lines += ["| argument | default | description |", "|---|---|---|"]
            lines += [f"| `{_invocation(a)}` | {_default(a)} | {_escape(_help(parser, a))} |" for a in actions]
            lines.append("")
    for path, help_text, sub in walk(parser):
        lines += _section(sub, path, help_text)
    return "\n".join(lines) + "\n"


# -- MkDocs events --------------------------------------------------------------------------------
def _nav_pages(nav) -> set[str]:
    found: set[str] = set()
    if isinstance(nav, str):
        found.add(nav)
    elif isinstance(nav, list):
        for item in nav:
            found |= _nav_pages(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            found |= _nav_pages(value)
    return found


def on_config(config, **kwargs):
    """Pages missing from ``nav`` go under "More topics" (sorted), so none is unreachable."""
    nav = config.get("nav")
    if not nav:
        return config
    docs = Path(config["docs_dir"])
    listed = _nav_pages(nav)
    missing = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md")
                     if not p.relative_to(docs).as_posix().startswith("hooks/"))
    missing = [p for p in missing if p not in listed]
    if missing:
        nav.append({MORE_TOPICS: missing})
    return config


def on_files(files, config, **kwargs):
    """Publish the benchmark plots of ``bench/results/`` as ``bench-results/NAME.png``."""
    from mkdocs.structure.files import File

    for png in sorted(BENCH_RESULTS.glob("*.png")):
        files.append(File.generated(config, f"bench-results/{png.name}", abs_src_path=str(png)))
    return files


_CODE_SPAN = re.compile(r"`[^`\n]+`")


def unescape_table_code(markdown: str) -> str:
    """``\\|`` inside code spans of table rows becomes ``|``.

    GitHub needs a pipe inside a code span of a table cell escaped (`a\\|b`) and drops the backslash;
    Python-Markdown keeps code spans whole and would show the backslash. Pages are written for GitHub.
    """
    out, fence = [], False
    for line in markdown.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        elif not fence and line.lstrip().startswith("|") and "\\|" in line:
            line = _CODE_SPAN.sub(lambda m: m.group(0).replace("\\|", "|"), line)
        out.append(line)
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files, **kwargs):
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, render_reference())
    return unescape_table_code(markdown)


_SPHINX_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):(?=<code>)")


def on_page_content(html: str, page, config, files, **kwargs):
    """Docstrings written for Sphinx say ``:class:`X```; the API pages show just the name."""
    return _SPHINX_ROLE.sub("", html)
