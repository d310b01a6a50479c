"""The README and docs/ stay true: every command they show parses with the real CLI, every
make target, file and FLAME_* name they mention exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from flame.cli import parser
from flame.settings import NOT_SETTINGS, FlameSettings

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TYPO_EXAMPLES = {"FLAME_ROUNDS"}  # docs/operations.md shows the warning a typo gets


def _text() -> str:
    return "\n".join(page.read_text() for page in PAGES)


def _inline() -> list[str]:
    return re.findall(r"`([^`\n]+)`", _text())


def _fenced_commands() -> list[str]:
    lines = []
    for page in PAGES:
        blocks = re.findall(r"```[a-z]*\n(.*?)```", page.read_text(), flags=re.S)
        lines += [ln.split("  #")[0].strip() for b in blocks for ln in b.splitlines()]
    return [ln for ln in lines if ln.startswith(("flame ", "python main.py"))]


def test_every_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme, page.name


def test_every_path_mentioned_exists() -> None:
    pattern = r"(?:scripts|benchmarks|flame|docs|services|tests)/[\w./-]*\w\.(?:py|sh|md|conf|yml)"
    paths = {m for s in _inline() for m in re.findall(pattern, s)}
    assert len(paths) > 20
    assert [p for p in sorted(paths) if not (ROOT / p).exists()] == []


def test_every_make_target_mentioned_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    shown = _inline() + [ln for ln in _text().splitlines() if ln.startswith("make ")]
    mentioned = {m for s in shown for m in re.findall(r"^make ([\w-]+)", s)}
    assert {"run", "test"} <= mentioned
    assert sorted(mentioned - targets) == []


def test_every_setting_mentioned_exists() -> None:
    known = {f"FLAME_{k.upper()}" for k in FlameSettings.model_fields} | NOT_SETTINGS
    mentioned = {n for n in re.findall(r"\bFLAME_[A-Z0-9_]*[A-Z0-9]\b", _text())}
    prefixes = {n for n in mentioned if any(k.startswith(n + "_") for k in known)}  # FLAME_DP_*
    assert sorted(mentioned - known - prefixes - TYPO_EXAMPLES) == []


def test_every_flame_command_shown_parses() -> None:
    """Fenced `flame ...` lines parse in full; inline ones name a real (sub)command and flags."""
    cli = parser()
    for line in _fenced_commands():
        words = shlex.split(line)
        if words[0] == "flame":
            cli.parse_args(words[1:])  # argparse exits on an unknown command or flag
    inline = [s for s in _inline() if re.match(r"flame [a-z]", s)]
    assert len(inline) > 10
    for command in inline:
        words = shlex.split(command.replace("<", "'<").replace(">", ">'"))
        action = cli._subparsers._group_actions[0]  # type: ignore[union-attr]
        sub = action.choices.get(words[1])
        assert sub is not None, f"`{command}`: no flame command {words[1]!r}"
        if sub._subparsers is not None and len(words) > 2 and not words[2].startswith("-"):
            sub = sub._subparsers._group_actions[0].choices.get(words[2])
            assert sub is not None, f"`{command}`: no such subcommand"
        flags = {s for a in sub._actions for s in a.option_strings}
        unknown = [w for w in words if w.startswith("--") and w.split("=")[0] not in flags]
        assert unknown == [], f"`{command}`: unknown flags {unknown}"


def test_the_main_py_usage_shown_matches_its_flags() -> None:
    from main import parse

    usage = next(s for s in _inline() if s.startswith("python main.py ["))
    values = {"--fraud-rate": "0.1", "--partitioning": "customer", "--split": "hash"}
    flags = re.findall(r"--[a-z-]+", usage)
    assert len(flags) >= 10, usage
    for flag in flags:  # argparse exits on a flag main.py does not have
        bare = ("--with-balances", "--drop-balances", "--verbose")
        value = [] if flag in bare else [values.get(flag, "1")]
        parse([flag, *value])
    with pytest.raises(SystemExit):
        parse(["--no-such-flag"])
