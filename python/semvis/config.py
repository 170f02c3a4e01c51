"""The one configuration base under every configuration of semvis (training runs, indexes, searches).

A configuration is a :func:`dataclasses.dataclass` subclass of :class:`Config`. The base gives it
validation on construction, ``from_dict`` / ``from_file`` (JSON or TOML) / ``to_dict`` / ``replace``,
named presets, and errors (:class:`ConfigError`, a ``ValueError``) that name the field, the value
received and what is allowed. A subclass declares its fields and implements :meth:`Config.validate`
with the ``check_*`` helpers; presets are a class attribute ``PRESETS`` mapping a name to the field
values it changes from the defaults.

Example::

    @dataclass
    class IndexConfig(Config):
        PRESETS = {"small": {"leaf_size": 16}}
        leaf_size: int = 100
        method: str = "tracks"

        def validate(self):
            self.check_int("leaf_size", lo=1)
            self.check_choice("method", ("tracks", "all"))
            return self

    IndexConfig.preset("small", method="all")
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, ClassVar, Dict, Iterable, Mapping, Optional, Sequence, Type, TypeVar, Union

__all__ = ["Config", "ConfigError", "parse_overrides"]

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A bad configuration value or file (a ValueError naming the field or the file)."""


class Config:
    """Base of every configuration dataclass (see the module docstring)."""

    #: name -> {field: value} changed from the defaults by that preset.
    PRESETS: ClassVar[Dict[str, Dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self: C) -> C:
        """Checks every field (raises :class:`ConfigError`); subclasses override. Returns self."""
        return self

    def fail(self, name: str, msg: str) -> None:
        raise ConfigError(f"config.{name}: {msg}, got {getattr(self, name)!r}")

    def check_choice(self, name: str, choices: Sequence[Any]) -> None:
        if getattr(self, name) not in choices:
            self.fail(name, f"must be one of {tuple(choices)}")

    def check_int(self, name: str, lo: Optional[int] = None, hi: Optional[int] = None,
                  optional: bool = False) -> None:
        v = getattr(self, name)
        if v is None and optional:
            return
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(name, "must be an int" + (" or null" if optional else ""))
        if lo is not None and v < lo:
            self.fail(name, f"must be >= {lo}")
        if hi is not None and v > hi:
            self.fail(name, f"must be <= {hi}")

    def check_float(self, name: str, lo: Optional[float] = None, hi: Optional[float] = None,
                    lo_open: bool = False, optional: bool = False) -> None:
        v = getattr(self, name)
        if v is None and optional:
            return
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(name, "must be a finite number" + (" or null" if optional else ""))
        if lo is not None and (v <= lo if lo_open else v < lo):
            self.fail(name, f"must be {'>' if lo_open else '>='} {lo}")
        if hi is not None and v > hi:
            self.fail(name, f"must be <= {hi}")

    def check_bool(self, name: str) -> None:
        if not isinstance(getattr(self, name), bool):
            self.fail(name, "must be true or false")

    def check_path(self, name: str, kind: str = "exists", optional: bool = True) -> None:
        """``kind``: "exists", "file" or "dir"."""
        v = getattr(self, name)
        if v is None:
            if not optional:
                self.fail(name, "is required")
            return
        if not isinstance(v, (str, os.PathLike)):
            self.fail(name, "must be a path")
        ok = {"exists": os.path.exists, "file": os.path.isfile, "dir": os.path.isdir}[kind](v)
        if not ok:
            self.fail(name, {"exists": "does not exist", "file": "is not a file", "dir": "is not a directory"}[kind])

    # ------------------------------------------------------------------ io
    @classmethod
    def field_names(cls) -> Iterable[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: Type[C], d: Mapping[str, Any]) -> C:
        """Builds and validates a config; unknown keys raise :class:`ConfigError` listing the known ones."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"config must be a mapping, got {type(d).__name__}")
        known = set(cls.field_names())
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"config: unknown key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**dict(d))

    @staticmethod
    def read_file(path: Union[str, os.PathLike]) -> Dict[str, Any]:
        """The mapping in a ``.json`` or ``.toml`` config file, unvalidated (:meth:`from_file` validates)."""
        p = os.fspath(path)
        if os.path.isdir(p):
            raise ConfigError(f"{p}: is a directory, not a config file")
        if not os.path.isfile(p):
            raise ConfigError(f"config file not found: {p}")
        try:
            if p.endswith(".toml"):
                import tomllib

                with open(p, "rb") as f:
                    d = tomllib.load(f)
            else:
                with open(p, encoding="utf-8") as f:
                    d = json.load(f)
        except Exception as e:  # noqa: BLE001 - any parse error is a bad file
            raise ConfigError(f"{p}: cannot parse config ({type(e).__name__}: {e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: a config file must hold a mapping, got {type(d).__name__}")
        return d

    @classmethod
    def from_file(cls: Type[C], path: Union[str, os.PathLike], **overrides: Any) -> C:
        """Reads a ``.json`` or ``.toml`` file (fields not in it keep their defaults), then ``overrides``."""
        return cls.from_dict({**cls.read_file(path), **overrides})

    @classmethod
    def preset(cls: Type[C], name: str, **overrides: Any) -> C:
        """The named preset (see ``PRESETS``), with ``overrides`` applied on top."""
        if name not in cls.PRESETS:
            raise ConfigError(f"unknown preset {name!r} for {cls.__name__}; known: {sorted(cls.PRESETS)}")
        return cls.from_dict({**cls.PRESETS[name], **overrides})

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists) that :meth:`from_dict` reads back."""
        def plain(v: Any) -> Any:
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, os.PathLike):
                return os.fspath(v)
            return v

        return {name: plain(getattr(self, name)) for name in self.field_names()}

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with ``changes`` applied."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def save(self, path: Union[str, os.PathLike]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)


def parse_overrides(pairs: Optional[Iterable[str]]) -> Dict[str, Any]:
    """``["lr=0.01", "data=coco"]`` -> ``{"lr": 0.01, "data": "coco"}``: values are parsed as JSON
    when they parse (numbers, true/false/null, lists), else kept as strings."""
    out: Dict[str, Any] = {}
    for kv in pairs or ():
        if "=" not in kv or not kv.split("=", 1)[0]:
            raise ConfigError(f"--set expects KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out
