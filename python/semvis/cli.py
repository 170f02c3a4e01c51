"""The ``semvis`` command line."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Dict, List, Optional


def _cmd_info(args: argparse.Namespace) -> int:
    import semvis_ext

    print(json.dumps(semvis_ext.info(), indent=2))
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {"info": _cmd_info}

from . import cli_crossmodal as _cli_crossmodal  # noqa: E402  (cheap: imports torch lazily)

COMMANDS.update(_cli_crossmodal.COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semvis", description="Semantic and multi-modal visual search.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="how semvis_ext was built (version, CUDA, threads)")
    _cli_crossmodal.register(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
