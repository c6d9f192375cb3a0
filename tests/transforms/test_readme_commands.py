"""Every ``arkiv …`` and ``make …`` command the README and docs/*.md show exists, with the options shown.

Commands are taken from fenced code blocks and from inline code spans. An ``arkiv`` command's
subcommand must exist and parse ``--help``; every ``--option`` shown must be one of that
subcommand's options; a first word written as ``list|show|approve`` must be among the
subcommand's choices. A ``make`` command's target must be a target of the Makefile and every
``VAR=value`` it passes must be a variable the Makefile uses.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from transforms.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
ENV = r"(?:[A-Z][A-Z0-9_]*=\S*\s+)*"
ARKIV = re.compile(rf"^{ENV}(?:\S*/)?arkiv\s+(.*)$")
MAKE = re.compile(rf"^{ENV}make\s+(.*)$")


def _commands(text: str) -> list[str]:
    """The command lines a page shows: code-block lines and inline code spans (comments dropped)."""
    found = []
    for block in FENCE.findall(text):
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ").strip()
            found.append(line.split(" # ")[0].split("  #")[0].strip())
    prose = FENCE.sub("", text)
    # inside a Markdown table a pipe in code is written \| and read as |
    found += [m.strip().replace("\\|", "|") for m in INLINE.findall(prose)]
    return [c for c in found if ARKIV.match(c) or MAKE.match(c)]


def _shown() -> list[tuple[str, str]]:
    return [(page.relative_to(ROOT).as_posix(), c) for page in PAGES for c in _commands(page.read_text("utf-8"))]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _make_targets_and_variables() -> tuple[set[str], set[str]]:
    text = (ROOT / "Makefile").read_text("utf-8")
    targets = set()
    for m in re.finditer(r"^([A-Za-z0-9_.%/ -]+?)\s*:(?!=)", text, re.M):
        targets.update(m[1].split())
    variables = set(re.findall(r"\$[({]([A-Za-z_][A-Za-z0-9_]*)[)}]", text))
    variables |= set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*[:?+]?=", text, re.M))
    return targets, variables


def arkiv_problems(command: str, subparsers: dict[str, argparse.ArgumentParser]) -> list[str]:
    """What in one shown ``arkiv`` command does not exist (empty when all of it does)."""
    rest = ARKIV.match(command)[1]
    problems = []
    for i, segment in enumerate(s.strip() for s in rest.split(" | ")):
        piped = i and not ARKIV.match(segment)
        segment = re.sub(rf"^{ENV}(?:\S*/)?arkiv\s+", "", segment) if i else segment
        words = segment.split()
        if not words or (piped and len(words) > 1 and words[0] not in subparsers):
            continue  # a shell pipe into another program (`| tail -1`), not a list of subcommands
        if words[0].startswith("-"):  # arkiv --help, arkiv --version
            if words[0] not in ("--help", "-h", "--version"):
                problems.append(f"arkiv has no option {words[0]}")
            continue
        for name in words[0].strip("[]").split("|"):
            sub = subparsers.get(name)
            if sub is None:
                if not re.fullmatch(r"[A-Z_…]+|…", name):
                    problems.append(f"no subcommand `arkiv {name}`")
                continue
            try:
                sub.parse_args(["--help"])
            except SystemExit as exc:
                if exc.code not in (0, None):
                    problems.append(f"`arkiv {name} --help` exits {exc.code}")
            options = {o for a in sub._actions for o in a.option_strings}
            for word in words[1:]:
                for option in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", word):
                    if option not in options:
                        problems.append(f"`arkiv {name}` has no option {option}")
            positional = next((a for a in sub._actions if not a.option_strings and a.choices), None)
            if positional is not None and len(words) > 1 and not words[1].startswith(("-", "[")):
                for choice in words[1].split("|"):
                    placeholder = re.fullmatch(r"[A-Z0-9_.…-]+", choice)
                    if not placeholder and choice not in positional.choices:
                        problems.append(f"`arkiv {name}` has no action {choice} "
                                        f"(choices: {', '.join(positional.choices)})")
    return problems


def make_problems(command: str, targets: set[str], variables: set[str]) -> list[str]:
    problems = []
    for word in MAKE.match(command)[1].split():
        if "=" in word:
            var = word.split("=", 1)[0]
            if var not in variables:
                problems.append(f"the Makefile uses no variable {var}")
        elif word.startswith("-") or word in ("…", "..."):
            continue
        elif word.strip("`,.;") not in targets:
            problems.append(f"the Makefile has no target {word}")
    return problems


def test_the_pages_show_commands_at_all():
    shown = _shown()
    assert len([c for _, c in shown if c.startswith("arkiv")]) > 20
    assert any(c.startswith("make demo") for _, c in shown)


@pytest.mark.parametrize(("page", "command"), _shown())
def test_every_command_shown_exists(page, command):
    if ARKIV.match(command):
        problems = arkiv_problems(command, _subparsers())
    else:
        problems = make_problems(command, *_make_targets_and_variables())
    assert not problems, f"{page}: `{command}`: " + "; ".join(problems)


def test_a_command_that_does_not_exist_is_caught():
    """The check can fail: invented subcommands, options, actions, targets and variables are named."""
    subs = _subparsers()
    assert arkiv_problems("arkiv demo --cases 20", subs) == ["`arkiv demo` has no option --cases"]
    assert arkiv_problems("arkiv quarantine list|decide CASE", subs)[0].startswith("`arkiv quarantine` has no action "
                                                                                   "decide")
    assert arkiv_problems("arkiv summarise", subs) == ["no subcommand `arkiv summarise`"]
    assert arkiv_problems("arkiv summary | arkiv packges", subs) == ["no subcommand `arkiv packges`"]
    assert arkiv_problems("arkiv status lex --json", subs) == []
    targets, variables = _make_targets_and_variables()
    assert make_problems("make demo DEMO_CASES=3", targets, variables) == ["the Makefile uses no variable DEMO_CASES"]
    assert make_problems("make demonstrate", targets, variables) == ["the Makefile has no target demonstrate"]
    assert make_problems("make demo SYSTEMS=lex", targets, variables) == []
