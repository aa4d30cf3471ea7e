"""The README and docs/ stay true: every `edge-runtime` command they quote parses (its subcommand
and options exist), every pipeline they run is shipped, every file they name exists."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def _code_lines():
    """Lines of the code blocks, continuation lines (ending in a backslash) joined."""
    for page in PAGES:
        in_block, held = False, ""
        for line in page.read_text().splitlines():
            if line.startswith("```"):
                in_block, held = not in_block, ""
                continue
            if in_block:
                if line.rstrip().endswith("\\"):
                    held += line.rstrip()[:-1] + " "
                    continue
                yield page, held + line
                held = ""


def _commands():
    out = []
    for page, line in _code_lines():
        for part in re.split(r"\s*(?:\||;|&&)\s*", line.split("  #")[0]):
            part = re.split(r"\s+\d?>\s*", part)[0].strip()          # no redirections
            m = re.search(r"(?:^|/)edge-runtime (.*)$", part)
            if m and not part.startswith("#"):
                out.append((page.name, m.group(1).strip().rstrip("\\").strip()))
    return out


COMMANDS = _commands()


def test_the_pages_quote_commands():
    assert len(COMMANDS) > 40


@pytest.mark.parametrize("page,cmd", COMMANDS, ids=[f"{p}:{c[:40]}" for p, c in COMMANDS])
def test_quoted_command_parses(page, cmd):
    from edge_runtime.cli import build_parser

    try:
        argv = shlex.split(cmd)
    except ValueError:
        pytest.skip(f"not a complete command line: {cmd}")
    argv = [a for a in argv if a != "\\"]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        assert e.code == 0, f"{page}: `edge-runtime {cmd}` does not parse"
        return
    if getattr(args, "command", None) == "run":
        from edge_runtime.config import list_pipelines

        name = args.pipeline
        assert name.endswith(".toml") or name in list_pipelines(), f"{page}: pipeline {name!r} is not shipped"


def test_named_files_exist():
    missing = []
    pat = re.compile(r"(?<![\w./-])((?:firmware_tools|docs|configs|examples|kernels|tests|hw_tests|models_int8|edge_runtime)"
                     r"/[\w./-]+\.(?:pyx|pxd|py|md|toml|json|onnx))(?![\w])")
    for page in PAGES:
        for m in pat.finditer(page.read_text()):
            p = m.group(1).rstrip(".")
            if "<" in p or "*" in p or "work/" in p:
                continue
            if not (ROOT / p).exists():
                missing.append(f"{page.name}: {p}")
    assert not missing, missing
