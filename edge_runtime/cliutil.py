"""Shared pieces of the ``edge-runtime`` argument parsers: example epilogs, hidden deprecated
aliases, the global logging options, and a walk over every (sub)command.

Short options mean one thing in every subcommand (docs/cli.md): ``-i`` input audio, ``-o``
output audio, ``-s`` a state file, ``-c`` a config file, ``-u`` a user, ``-v``/``-q`` more or
less logging. An old spelling stays as a hidden alias that still works and says what replaced it.
"""
from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["EXIT_CODES_EPILOG", "LOG_LEVELS", "add_global_options", "deprecated_alias", "examples",
           "log_level", "parser_kwargs", "setup_logging", "walk"]

LOG_LEVELS = ("debug", "info", "warning", "error")

EXIT_CODES_EPILOG = """\
exit status:
  0    success
  1    runtime failure: a device that cannot be opened or fails mid-run, a write that fails
       after the output was opened (disk full), an optional dependency not installed
  2    usage error: bad option, config, pipeline, input file, model file or output path
  130  interrupted by SIGINT (Ctrl-C); 143 by SIGTERM; 129 by SIGHUP. Outputs are discarded,
       except on Ctrl-C during a live input (raw PCM on stdin, alsa:, a streamed WAV): that
       run stops cleanly, commits its outputs and prints its summary (still 130)"""


def examples(*lines: str) -> str:
    """An epilog block of example command lines (``# comment`` lines kept as they are)."""
    return "examples:\n" + "\n".join(f"  {x}" for x in lines)


def parser_kwargs(help: str, example_lines: tuple[str, ...] | list[str], description: str | None = None) -> dict:
    """Keyword arguments of ``add_parser`` for a subcommand with an example epilog."""
    return {"help": help, "description": description or help[:1].upper() + help[1:] + ".",
            "epilog": examples(*example_lines), "formatter_class": argparse.RawDescriptionHelpFormatter}


def deprecated_alias(parser: argparse.ArgumentParser, *flags: str, dest: str, new: str, **kwargs) -> None:
    """Accept ``flags`` as a hidden, deprecated spelling of ``new`` (same ``dest``): old scripts
    keep working and are told on stderr what to write instead."""

    class _Alias(argparse.Action):
        def __call__(self, p, namespace, values, option_string=None):
            sys.stderr.write(f"edge-runtime: warning: {option_string} is deprecated; use {new}\n")
            setattr(namespace, self.dest, values)

    parser.add_argument(*flags, dest=dest, action=_Alias, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def _global(parser: argparse.ArgumentParser, top: bool) -> None:
    # on subcommands the defaults are SUPPRESS so that `-v run` is not undone by run's own default
    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    g = parser.add_argument_group("logging (before or after the subcommand)")
    g.add_argument("-v", "--verbose", action="count", default=d(0),
                   help="more log output on stderr: -v info, -vv debug")
    g.add_argument("-q", "--quiet", action="store_true", default=d(False),
                   help="only errors on stderr; no progress bar, no summary")
    g.add_argument("--log-level", choices=LOG_LEVELS, default=d(None),
                   help="log level of the edge_runtime logger (overrides -v/-q; "
                        "serve: overrides [service] log_level)")


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Yield ``(command path, parser)`` for the parser and every subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, path + (name,))


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """``-v/--verbose``, ``-q/--quiet``, ``--log-level`` on ``parser`` and every subcommand."""
    for path, p in walk(parser):
        _global(p, top=not path)


def log_level(args) -> str | None:
    """The level the options ask for (``None``: the command's default)."""
    if getattr(args, "log_level", None):
        return args.log_level
    if getattr(args, "quiet", False):
        return "error"
    v = getattr(args, "verbose", 0) or 0
    return "debug" if v >= 2 else "info" if v == 1 else None


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def setup_logging(args, enable: bool = True) -> None:
    """Route the ``edge_runtime`` logger to stderr as ``edge-runtime: LEVEL: message`` at the
    level the options ask for (default warning). ``enable=False`` (``serve``, which installs its
    JSON log) removes that handler instead."""
    logger = logging.getLogger("edge_runtime")
    for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(h)
    if not enable:
        return
    logger.setLevel((log_level(args) or "warning").upper())
    h = _StderrHandler()
    h.setFormatter(logging.Formatter("edge-runtime: %(levelname)s: %(message)s"))
    logger.addHandler(h)
    logger.propagate = False
