"""The `chainrule` command. Each subcommand parses its options here and calls the library.

User errors (`ChainruleError`) print one line to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import ChainruleError

EPILOG = """examples:
  chainrule example                      walk through one step of backpropagation on the reference example
"""


def _cmd_example(args: argparse.Namespace) -> int:
    from .explain import run_example_cli

    return run_example_cli(args)


def _add_example(sub: argparse._SubParsersAction) -> None:
    from .explain import add_example_arguments

    p = sub.add_parser(
        "example",
        help="the reference example, every number of one learning step",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_example_arguments(p)
    p.set_defaults(func=_cmd_example)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chainrule",
        description="Neural networks that learn by backpropagation, with every number explained.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"chainrule {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_example(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ChainruleError as e:
        print(f"chainrule {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
