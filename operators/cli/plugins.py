"""Subcommands that other distributions add to `sluice`, through the entry-point group `sluice.commands`.

An entry point is named after its command and loads to a function that adds that command's parser,
with its handler, to `sluice`'s subcommands (as `run.add_parser` does for `sluice run`):

    [project.entry-points."sluice.commands"]
    demo = "sluice_sandbox.cli:add_demo_parser"

This is how the sandbox (sandbox/ in the repository: the `sluice-sandbox` distribution) provides
`sluice sandbox` and `sluice demo`, so that the operator's own installation carries neither it nor
kmock. Those two are listed even when the sandbox is missing; they then say how to install it, and
exit 2.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

GROUP = "sluice.commands"

# The commands of the sandbox: how to get them when they are missing.
SANDBOX_COMMANDS = ("sandbox", "demo")
SANDBOX_DISTRIBUTION = "sluice-sandbox"
SANDBOX_INSTALL = "from a Sluice checkout, `pip install ./sandbox`, or run ./scripts/demo"

# Exit code of a command that is not installed, as for any other usage error.
NOT_INSTALLED = 2


def add_parsers(commands: Any) -> None:
    """Add the installed plug-in commands, the sandbox's first, then stand-ins for missing ones."""
    found = {entry_point.name: entry_point for entry_point in entry_points(group=GROUP)}
    others = sorted(name for name in found if name not in SANDBOX_COMMANDS)
    for name in [*SANDBOX_COMMANDS, *others]:
        if name in commands.choices:  # a built-in command is never replaced
            continue
        entry_point = found.get(name)
        if entry_point is None:
            _add_missing(commands, name, "not installed")
            continue
        try:
            add_parser = entry_point.load()
        except ImportError as error:  # installed, but something it needs is not
            _add_missing(commands, name, f"cannot import {_module(entry_point)}: {error}")
            continue
        add_parser(commands)


def _add_missing(commands: Any, name: str, reason: str) -> None:
    if name in SANDBOX_COMMANDS:
        summary = f"needs the {SANDBOX_DISTRIBUTION} package"
        message = f"sluice {name} needs the {SANDBOX_DISTRIBUTION} package ({reason}): {SANDBOX_INSTALL}"
    else:
        summary = "cannot be loaded"
        message = f"sluice {name} cannot be loaded ({reason})"
    # No options of its own (prefix_chars that no argument starts with): whatever follows the
    # command, even --help, lands in `ignored`, and the handler says what is missing.
    parser = commands.add_parser(name, help=summary, add_help=False, prefix_chars="\0")
    parser.add_argument("ignored", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(handler=lambda _args: _missing(message))


def _missing(message: str) -> int:
    print(message, file=sys.stderr)
    return NOT_INSTALLED


def _module(entry_point: EntryPoint) -> str:
    return entry_point.value.partition(":")[0].strip()
