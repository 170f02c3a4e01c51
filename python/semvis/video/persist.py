"""The index file: one zip of arrays (``numpy.savez``), format ``semvis-video-index`` version 2.

Members: ``meta`` (a JSON header: format tag, version, configuration, video ids, statistics and,
for every array, its dtype, shape and SHA-256), the store's arrays under their names (see
:mod:`semvis.video.store`) and ``tree``, the kd-tree in the bytes of
:meth:`semvis_ext.BinaryKDTree.to_bytes`. Files written before the package split read unchanged.

Loading trusts nothing: the zip must hold exactly the members of the header and nothing after its
end, every array must match its checksum, and the store's arrays are range-checked
(:meth:`Block.check`), the kd-tree's ids must be a permutation of the items.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile
from typing import Dict, Optional, Tuple, Union

import numpy as np

from .config import VideoIndexConfig
from .store import Block

__all__ = ["FORMAT", "VERSION", "write", "read"]

FORMAT = "semvis-video-index"
VERSION = 2


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data).hexdigest()


def write(path: Union[str, os.PathLike], cfg: VideoIndexConfig, block: Block, tree, stats: dict,
          extra: Optional[Dict[str, np.ndarray]] = None) -> None:
    """Writes the file atomically (to ``path + ".tmp"``, then renamed). ``extra``: a method's
    model arrays (names starting ``model.``, e.g. the global method's weights)."""
    arrays = block.arrays()
    for k, a in (extra or {}).items():
        if not k.startswith("model."):
            raise ValueError(f"persist.write: extra array names must start with 'model.', got {k!r}")
        arrays[k] = a
    if tree is not None:
        arrays["tree"] = np.frombuffer(tree.to_bytes(), dtype=np.uint8)
    meta = {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(), "videos": block.video_ids, "stats": stats,
            "arrays": {k: {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": _sha(a)} for k, a in arrays.items()}}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = os.fspath(path)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _read_zip(path: str, bad, mmap: bool = False) -> Dict[str, np.ndarray]:
    """Every member of the zip as an array, refusing anything ``save`` does not write; with
    ``mmap``, read-only memory maps of the file (the members are stored uncompressed)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(0, size - 22 - 65535))
        tail = f.read()
    if head != b"PK\x03\x04":
        raise bad("not a semvis video index (not a zip of arrays)")
    # the zip's end record must close the file: anything after it is junk
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail) or at + 22 + int.from_bytes(tail[at + 20:at + 22], "little") != len(tail):
        raise bad("truncated, or bytes after the end of the index")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names) or not all(n.endswith(".npy") for n in names):
                raise bad("not a semvis video index (unexpected zip members)")
            out = {}
            for i in infos:
                if i.compress_type != zipfile.ZIP_STORED or i.file_size > size:
                    raise bad(f"member {i.filename!r} is not stored as written")
                if mmap:
                    out[i.filename[:-4]] = _map_npy(path, i, size, bad)
                    continue
                with zf.open(i) as m:
                    out[i.filename[:-4]] = _read_npy(m, i.file_size, bad, i.filename[:-4])
            return out
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, KeyError, NotImplementedError,
            RuntimeError, struct.error) as e:
        raise bad(f"not a semvis video index, or a truncated/corrupt one ({type(e).__name__}: {e})") from None


def _map_npy(path: str, info: zipfile.ZipInfo, size: int, bad) -> np.ndarray:
    """A read-only memory map of one stored .npy member (checked: local header, npy header, size)."""
    name = info.filename[:-4]
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)
        if len(head) != 30 or head[:4] != b"PK\x03\x04":
            raise bad(f"member {name!r} has no local header")
        start = info.header_offset + 30 + int.from_bytes(head[26:28], "little") + int.from_bytes(head[28:30], "little")
        f.seek(start)
        fmt = np.lib.format
        try:
            version = fmt.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"npy version {version}")
            shape, fortran, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
        except Exception as e:  # noqa: BLE001 - as in _read_npy: any failure is corruption
            raise bad(f"corrupt array {name!r} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        off = f.tell()
    if dtype.hasobject or dtype.itemsize == 0:
        raise bad(f"array {name!r} holds Python objects or no data (not a semvis video index)")
    n = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if off - start + n != info.file_size or off + n > size:
        raise bad(f"array {name!r} is truncated or has trailing bytes")
    if n == 0:
        return np.empty(shape, dtype)
    a = np.memmap(path, dtype=dtype, mode="r", offset=off, shape=tuple(shape), order="F" if fortran else "C")
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _read_npy(m, limit: int, bad, name: str) -> np.ndarray:
    """One .npy member (no object arrays: nothing is ever unpickled)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(m)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(m)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(m)
        else:
            raise ValueError(f"npy version {version}")
    except Exception as e:  # noqa: BLE001 - numpy parses the header with tokenize/ast: any failure is corruption
        raise bad(f"corrupt array {name!r} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if dtype.hasobject or dtype.itemsize == 0:
        raise bad(f"array {name!r} holds Python objects or no data (not a semvis video index)")
    n = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if n > limit:
        raise bad(f"array {name!r} is truncated")
    buf = bytearray(n)
    if m.readinto(buf) != n or m.read(1):  # reading to the end checks the zip CRC
        raise bad(f"array {name!r} is truncated or has trailing bytes")
    a = np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return a if a.flags.c_contiguous else a.copy(order="C")


def read(path: Union[str, os.PathLike], with_model: bool = False, mmap: bool = False) -> Tuple:
    """(config, store block, kd-tree or None, stats) of an index file, plus the ``model.*``
    arrays (a dict) when ``with_model``; ValueError naming the file and what is wrong,
    FileNotFoundError if there is no file. ``mmap``: the arrays (and the kd-tree's keys and ids)
    are read-only memory maps of the file instead of copies in memory; every check is the same
    (the checksums read the file once, through the page cache). The file must not change while
    it is mapped."""
    from .methods import method_for

    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"VideoIndex.load: {path}: is a directory, not an index file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VideoIndex.load: {path}: no such file")

    def bad(why):
        return ValueError(f"VideoIndex.load: {path}: {why}")

    arrays = _read_zip(path, bad, mmap)
    if "meta" not in arrays:
        raise bad("not a semvis video index (no header)")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        raise bad("corrupt header") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise bad("not a semvis video index (wrong format tag)")
    if meta.get("version") != VERSION:
        raise bad(f"unsupported version {meta.get('version')!r} (this semvis reads version {VERSION})")
    spec, vids, stats = meta.get("arrays"), meta.get("videos"), meta.get("stats", {})
    if not isinstance(spec, dict) or not isinstance(vids, list) or not isinstance(stats, dict):
        raise bad("corrupt header")
    if set(spec) != set(arrays):
        raise bad(f"the header lists arrays {sorted(spec)}, the file holds {sorted(arrays)}")
    for k, a in arrays.items():
        sp = spec[k]
        if not isinstance(sp, dict) or a.dtype.str != sp.get("dtype") or list(a.shape) != sp.get("shape") \
                or _sha(a) != sp.get("sha256"):
            raise bad(f"array {k!r} does not match its checksum (corrupt file)")
    try:
        cfg = VideoIndexConfig.from_dict(meta.get("config"))
    except (TypeError, ValueError) as e:
        raise bad(f"invalid configuration in the header ({e})") from None
    layout = method_for(cfg).layout()
    for k, c in layout.items():  # columns added since version 2 was first written: zeros
        if c.optional and k not in arrays and isinstance(arrays.get("frame_numbers"), np.ndarray):
            arrays[k] = np.zeros((len(arrays["frame_numbers"]), c.width), c.dtype)
    names = {"codes", "frame_numbers", "frame_base", "video_shot_offsets", "shot_offsets", "shot_video",
             "shot_local", "shot_first", "shot_last"} | set(layout)
    if names - set(arrays):
        raise bad(f"missing arrays {sorted(names - set(arrays))}")
    model = {k: arrays.pop(k) for k in [k for k in arrays if k.startswith("model.")]}
    if set(arrays) - names - {"tree"}:
        raise bad(f"unexpected arrays {sorted(set(arrays) - names - {'tree'})}")
    block = Block(vids, arrays, {k: arrays[k] for k in layout})
    try:
        block.check(layout)
    except (ValueError, TypeError, IndexError) as e:
        raise bad(str(e)) from None
    stats = {k: v for k, v in stats.items() if isinstance(k, str) and isinstance(v, (int, float))}
    K = block.n_items
    if K == 0:
        if "tree" in arrays:
            raise bad("a kd-tree in an index without items")
        return (cfg, block, None, stats, model) if with_model else (cfg, block, None, stats)
    if "tree" not in arrays:
        raise bad("missing kd-tree")
    from semvis_ext import BinaryKDTree

    try:
        tree = BinaryKDTree.from_bytes(arrays["tree"])
    except (ValueError, TypeError) as e:
        raise bad(f"corrupt kd-tree ({e})") from None
    if len(tree) != K or tree.nbits != 8 * block.codes.shape[1]:
        raise bad(f"the kd-tree holds {len(tree)} keys of {tree.nbits} bits, the index {K} of "
                  f"{8 * block.codes.shape[1]}")
    ids = np.asarray(tree.ids)
    if len(ids) != K or ids.min() < 0 or ids.max() >= K or np.bincount(ids, minlength=K).max() != 1:
        raise bad("the kd-tree's ids are not the index's items")
    for a in range(0, K, 1 << 20):  # the tree's keys are the index's (in chunks: bounded memory)
        if not np.array_equal(tree.codes[a:a + (1 << 20)], block.codes[ids[a:a + (1 << 20)]]):
            raise bad("the kd-tree's keys are not the index's items")
    return (cfg, block, tree, stats, model) if with_model else (cfg, block, tree, stats)
