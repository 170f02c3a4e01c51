"""The configuration base every semvis config subclasses."""
import json
from dataclasses import dataclass
from typing import Tuple

import pytest

from semvis.config import Config, ConfigError, parse_overrides


@dataclass
class _Cfg(Config):
    PRESETS = {"small": {"size": 2, "name": "b"}}
    size: int = 4
    rate: float = 0.5
    name: str = "a"
    sizes: Tuple[int, ...] = (1, 2)
    flag: bool = True

    def validate(self):
        self.check_int("size", lo=1)
        self.check_float("rate", lo=0, lo_open=True)
        self.check_choice("name", ("a", "b"))
        self.check_bool("flag")
        self.sizes = tuple(self.sizes)
        return self


def test_roundtrip_and_replace(tmp_path):
    c = _Cfg(size=3)
    d = c.to_dict()
    assert d == {"size": 3, "rate": 0.5, "name": "a", "sizes": [1, 2], "flag": True}
    assert _Cfg.from_dict(d) == c
    assert c.replace(name="b").name == "b" and c.name == "a"
    p = tmp_path / "c.json"
    c.save(p)
    assert _Cfg.from_file(p) == c
    t = tmp_path / "c.toml"
    t.write_text('size = 7\nname = "b"\n')
    assert _Cfg.from_file(t, rate=2.0) == _Cfg(size=7, name="b", rate=2.0)


def test_presets():
    assert _Cfg.preset("small") == _Cfg(size=2, name="b")
    assert _Cfg.preset("small", size=9).size == 9
    with pytest.raises(ConfigError, match="unknown preset 'big'.*small"):
        _Cfg.preset("big")


@pytest.mark.parametrize("kw,msg", [
    ({"size": 0}, "config.size: must be >= 1, got 0"),
    ({"size": True}, "config.size: must be an int"),
    ({"rate": 0.0}, "config.rate: must be > 0"),
    ({"rate": float("nan")}, "config.rate: must be a finite number"),
    ({"name": "c"}, r"config.name: must be one of \('a', 'b'\), got 'c'"),
    ({"flag": 1}, "config.flag: must be true or false"),
])
def test_errors_name_the_field(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        _Cfg(**kw)


def test_bad_files_and_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sise'\]"):
        _Cfg.from_dict({"sise": 1})
    with pytest.raises(ConfigError, match="config file not found"):
        _Cfg.from_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse config"):
        _Cfg.from_file(bad)
    lst = tmp_path / "list.json"
    lst.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        _Cfg.from_file(lst)


def test_parse_overrides():
    assert parse_overrides(["a=1", "b=x", "c=[1, 2]", "d=true", "e=a=b"]) == {
        "a": 1, "b": "x", "c": [1, 2], "d": True, "e": "a=b"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["novalue"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["=1"])
