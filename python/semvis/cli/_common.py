"""What every ``semvis <system> <verb>`` shares: the parser class, the options that mean one thing
everywhere, the user error, the output checks and the output printer."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import tempfile
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Type

__all__ = ["UserError", "Parser", "add_verb", "add_hidden_alias", "add_config_options", "add_checkpoint", "add_out",
           "add_json", "add_quiet", "load_config", "one_line", "user_errors", "check_input_file", "check_output_file",
           "check_output_dir", "Printer"]


class UserError(Exception):
    """A mistake of the user (a bad path, value or file): ``main`` prints
    ``semvis <system> <verb>: <message>`` on one line and exits with status 2, no traceback."""


class Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (``<prog>: <message> (see --help)``), exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def add_verb(verbs, name: str, func: Callable[[argparse.Namespace], int], help: str, command: str,
             description: Optional[str] = None) -> Parser:
    """Adds verb ``name`` to a system's ``verbs`` subparsers; ``command`` ("semantic train") names
    it in error messages."""
    p = verbs.add_parser(name, help=help, description=description or help)
    p.set_defaults(func=func, command=command)
    return p


def add_hidden_alias(subparsers, old: str, build: Callable[[Parser], None], func, command: str) -> None:
    """An old spelling (``train-semantic``) of ``command``: same options, not listed in ``--help``."""
    p = subparsers.add_parser(old, description=f"old spelling of `semvis {command}`")  # no help=: not listed
    build(p)
    p.set_defaults(func=func, command=command)


def add_config_options(p: argparse.ArgumentParser, presets: Sequence[str], default: str, what: str) -> None:
    """``--config FILE``, ``--preset NAME`` (a config preset) and ``--set KEY=VALUE``."""
    p.add_argument("--config", metavar="FILE", help=f"a .json or .toml {what} file (fields not in it: the preset's)")
    p.add_argument("--preset", choices=tuple(presets), default=default,
                   help=f"config preset the file and --set apply on (default: {default})")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override a config field (a JSON value or a string), e.g. --set steps=200; repeatable")


def add_checkpoint(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("checkpoint", help=f"a checkpoint written by `{what}`")


def add_out(p: argparse.ArgumentParser, help: str, default: Optional[str] = None, required: bool = False) -> None:
    """``-o/--out``: what the command writes (the command checks it before any work)."""
    p.add_argument("-o", "--out", default=default, metavar="PATH", help=help, required=required)


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON lines on stdout (one object per line)")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress messages")


def load_config(cls, args: argparse.Namespace, **fixed: Any):
    """The config of a command: the ``--preset``'s fields, those of ``--config FILE`` on top, then
    the ``--set`` overrides, then ``fixed`` (values of the command's own options; None: not given)."""
    from ..config import parse_overrides

    d = cls.preset(args.preset).to_dict()
    if args.config:
        d.update(cls.read_file(args.config))
    d.update(parse_overrides(args.set))
    d.update({k: v for k, v in fixed.items() if v is not None})
    return cls.from_dict(d)


_UNSAFE = re.compile(r"pickle|weights_only|unsafe", re.IGNORECASE)


def one_line(e: BaseException) -> str:
    """The first line of an exception's message, without any advice to load a file unsafely
    (numpy's ``allow_pickle`` / torch's ``weights_only`` hints are cut off: never suggest unpickling)."""
    text = str(e).strip()
    if isinstance(e, KeyError) and e.args:
        return f"missing {e.args[0]!r}"
    msg = text.splitlines()[0] if text else type(e).__name__
    if _UNSAFE.search(msg):
        cut = msg.split(" (")[0].rstrip(" .:;")
        msg = cut if cut and not _UNSAFE.search(cut) else "not a file semvis can read"
    return msg


@contextlib.contextmanager
def user_errors(*types: Type[BaseException], prefix: str = "") -> Iterator[None]:
    """Exceptions of ``types`` raised inside become :class:`UserError` (their first line)."""
    try:
        yield
    except types as e:  # type: ignore[misc]
        raise UserError(prefix + one_line(e)) from None


def check_input_file(path: str, what: str) -> str:
    """``path`` if it is an existing regular file, else a UserError naming it and ``what`` it should be."""
    if os.path.isdir(path):
        raise UserError(f"{what} {path}: is a directory, not a file")
    if not os.path.exists(path):
        raise UserError(f"{what} {path}: no such file")
    if not os.path.isfile(path):
        raise UserError(f"{what} {path}: not a regular file")
    return path


def _probe_dir(d: str, shown: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".semvis-probe-", dir=d)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError(f"{shown}: cannot write in {d or '.'} ({e.strerror or e})") from None


def check_output_file(path: str, option: str = "-o") -> str:
    """Checks, before any work, that the file ``path`` can be written: not a folder, its folder
    exists and is writable. Returns ``path``."""
    if not path:
        raise UserError(f"{option}: an output path is required")
    if os.path.isdir(path):
        raise UserError(f"{option} {path}: is a directory; give a file name")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        what = "is not a directory" if os.path.exists(d) else "does not exist"
        raise UserError(f"{option} {path}: the folder {d} {what}")
    _probe_dir(d, f"{option} {path}")
    return path


def check_output_dir(path: str, option: str = "-o") -> str:
    """Checks, before any work, that the folder ``path`` exists or can be created and is writable
    (creating it). Returns ``path``."""
    if not path:
        raise UserError(f"{option}: an output folder is required")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{option} {path}: exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{option} {path}: cannot create the folder ({e.strerror or e})") from None
    _probe_dir(path, f"{option} {path}")
    return path


def _plain(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _is_main_rank() -> bool:
    """False on the ranks > 0 of an initialised torch.distributed group (torch is not imported here)."""
    torch = sys.modules.get("torch")
    d = getattr(torch, "distributed", None)
    return d is None or not (d.is_available() and d.is_initialized()) or d.get_rank() == 0


class Printer:
    """Prints a command's records: JSON lines with ``--json``, readable text otherwise;
    ``info`` lines go to stderr unless ``--quiet``. Under torchrun only rank 0 prints."""

    def __init__(self, args: argparse.Namespace):
        self.json = bool(getattr(args, "json", False))
        self.quiet = bool(getattr(args, "quiet", False))

    def record(self, obj: Dict[str, Any], text: Optional[str] = None) -> None:
        if not _is_main_rank():
            return
        if self.json:
            print(json.dumps(_plain(obj)), flush=True)
        else:
            print(text if text is not None else _text(obj), flush=True)

    def info(self, msg: str) -> None:
        if not self.quiet and _is_main_rank():
            print(msg, file=sys.stderr, flush=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _text(obj: Dict[str, Any]) -> str:
    if all(not isinstance(v, (dict, list, tuple)) for v in obj.values()):
        return "  ".join(f"{k} {_fmt(v)}" for k, v in obj.items())
    return json.dumps(_plain(obj), indent=1)
