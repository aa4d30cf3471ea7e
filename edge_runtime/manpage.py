"""``edge-runtime man``: a roff manual page generated from the argument parser.

Written here rather than taken from argparse-manpage (which installs and works) because this is
about 60 lines with no dependency, renders nested subcommands (``anomaly learn``) with their
example epilogs verbatim, and puts no build date in the page (the same parser gives the same
page byte for byte).
"""
from __future__ import annotations

import argparse

from ._version import __version__
from .cliutil import walk

__all__ = ["render"]


def _esc(text: str) -> str:
    """Escape for roff: backslashes, hyphens; a leading '.' or "'" must not start a request."""
    out = []
    for line in str(text).replace("\\", "\\e").replace("-", "\\-").splitlines():
        out.append("\\&" + line if line[:1] in (".", "'") else line)
    return "\n".join(out)


def _options(parser: argparse.ArgumentParser) -> list[str]:
    lines = []
    for a in parser._actions:
        if a.help == argparse.SUPPRESS or isinstance(a, argparse._SubParsersAction):
            continue
        if a.option_strings:
            flags = ", ".join(a.option_strings)
            if a.nargs != 0:
                choices = "{" + ",".join(map(str, a.choices)) + "}" if a.choices else None
                flags += " " + (a.metavar or choices or a.dest.upper())
        else:
            flags = a.metavar or a.dest
        lines += [".TP", f"\\fB{_esc(flags)}\\fR", _esc(a.help or "")]
    return lines


def render(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    lines = [f'.TH EDGE\\-RUNTIME 1 "" "edge\\-runtime {_esc(__version__)}" "User Commands"',
             ".SH NAME", f"{_esc(prog)} \\- {_esc(parser.description or '')}",
             ".SH SYNOPSIS", f"\\fB{_esc(prog)}\\fR [\\-v|\\-q|\\-\\-log\\-level LEVEL] COMMAND [OPTIONS]",
             ".SH COMMANDS"]
    subs = [(path, p) for path, p in walk(parser) if path]
    for path, p in subs:
        lines += [".TP", f"\\fB{_esc(' '.join(path))}\\fR", _esc((p.description or "").split("\n")[0])]
    lines += [".SH OPTIONS"] + _options(parser)
    for path, p in subs:
        lines += [f'.SH "{_esc(prog + " " + " ".join(path)).upper()}"', ".nf", _esc(p.format_usage().strip()), ".fi"]
        if p.description:
            lines += [".PP", _esc(p.description)]
        lines += _options(p)
        if p.epilog:
            lines += [".PP", ".nf", _esc(p.epilog), ".fi"]
    if parser.epilog:
        lines += [".SH NOTES", ".nf", _esc(parser.epilog), ".fi"]
    return "\n".join(lines) + "\n"
