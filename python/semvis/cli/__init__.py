"""The ``semvis`` command line: one grammar, ``semvis <system> <verb> [options]``.

    semvis semantic   train | eval | search      caption-supervised semantic retrieval
    semvis crossmodal train | eval | search      BEAN / DSVE-loc text <-> image with localization
    semvis listwise   train | eval               listwise losses (AP, triplet, SoDeep) example
    semvis sodeep     pretrain | eval            learned SoDeep sorters (Table 5.1)
    semvis video      index | search | demo      image-to-video search
    semvis landmarks  eval | synth               the revisited Oxford/Paris protocol, whitening, QE, diffusion
    semvis simnet     train | eval | search      a learned non-metric similarity (SimNet)
    semvis text2art   train | eval | search      text <-> painting retrieval (SemArt)
    semvis demo                                  the main job (= semvis video demo)
    semvis info                                  how semvis_ext was built

Options mean one thing everywhere (:mod:`semvis.cli._common`): ``--config FILE`` (JSON/TOML),
``--preset NAME`` (a config preset), ``--set KEY=VALUE`` (a config field), a checkpoint is the
first positional argument, ``-o/--out`` is what the command writes (checked before any work),
``--json`` prints JSON lines on stdout, ``--quiet`` turns progress off.

Errors: a user's mistake (bad path, value, config or file) raises :class:`UserError` (or a
``ConfigError``) anywhere in a command; :func:`main`, the one handler, prints
``semvis <system> <verb>: <message>`` on one line and returns 2. No traceback for those.

Adding a system (``sodeep``, ``simnet``, ``text2art``, ``landmarks``...): write
``semvis/cli/<system>.py`` with

    NAME = "sodeep"
    def register(subparsers) -> None:
        system = subparsers.add_parser(NAME, help="...")
        verbs = system.add_subparsers(dest="verb", metavar="VERB", required=True)
        p = add_verb(verbs, "train", _train, "train ...", command="sodeep train")
        add_config_options(p, SoDeepConfig.PRESETS, "synthetic", "SoDeepConfig"); add_out(p, ...)

    def _train(args) -> int: ...           # raise UserError(...) for the user's mistakes

and add the module to the import and to ``SYSTEMS`` below (a 2-line change). Old spellings of a
command go through ``_common.add_hidden_alias`` (accepted, not listed in ``--help``).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from ._common import Parser, UserError, one_line
from . import crossmodal, landmarks, listwise, semantic, simnet, sodeep, text2art, video

#: the system modules, in --help order; each has ``register(subparsers)``
SYSTEMS = [semantic, crossmodal, listwise, video, sodeep, landmarks, simnet, text2art]

__all__ = ["main", "build_parser", "UserError", "SYSTEMS"]


def _info(args: argparse.Namespace) -> int:
    import semvis_ext

    print(json.dumps(semvis_ext.info(), indent=None if args.json else 2))
    return 0


def build_parser() -> Parser:
    p = Parser(prog="semvis", description="Semantic and multi-modal visual search: semvis <system> <verb>.")
    sub = p.add_subparsers(dest="system", metavar="COMMAND")
    for mod in SYSTEMS:
        mod.register(sub)
    video.register_demo(sub)  # `semvis demo`: the main job, at the top
    i = sub.add_parser("info", help="how semvis_ext was built (version, CUDA, threads)")
    i.add_argument("--json", action="store_true", help="one JSON line")
    i.set_defaults(func=_info, command="info")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Runs ``semvis`` with ``argv`` (default: sys.argv[1:]); returns the exit status."""
    from ..config import ConfigError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed on one line
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError) as e:
        print(f"semvis {args.command}: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"semvis {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
