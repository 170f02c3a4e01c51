"""The columnar store of a video index: the sole owner of its arrays.

A :class:`Block` holds V videos as flat arrays: the indexed items (``codes``, one row per key
feature or frame feature, grouped by shot), the shot table, the decoding-order number of every
sampled frame, and the columns an indexing method adds (its :class:`Column` layout). Indexing a
video makes a one-video block; :meth:`Block.merge` concatenates blocks; :meth:`Block.check`
validates every array (shapes, dtypes and value ranges: a file may be hostile). Search reads one
shot at a time through a :class:`ShotView`. Frame indices are *sampled* frames numbered from 0
within their video; ``frame_numbers`` maps them to decoding order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Column", "Block", "ShotView", "ITEM", "OFFSETS", "ROWS", "FRAME"]

ITEM, OFFSETS, ROWS, FRAME = "item", "offsets", "rows", "frame"
CODES = -1  # Column.width: as many bytes as a code


@dataclass(frozen=True)
class Column:
    """A method's array. ``kind``: ITEM (one row per indexed item), OFFSETS (int64 CSR over the
    sampled frames, T + 1 entries per video, into the rows of ``table``: ``"items"`` or a ROWS
    group), ROWS (rows of the frame table ``table``) or FRAME (one row per sampled frame).
    ``width``: trailing dimension (None: 1-D; CODES: the code bytes). ``shot_frames``: ITEM int
    columns whose values are sampled frames, each within its item's shot. ``optional``: a FRAME
    column that files of earlier versions lack (read as zeros)."""

    kind: str
    dtype: str
    width: Optional[int] = None
    table: str = "items"
    shot_frames: bool = False
    optional: bool = False


def _concat_csr(parts: Sequence[np.ndarray]) -> np.ndarray:
    """CSR offsets of several blocks as one (each shifted by the rows before it)."""
    out, base = [np.zeros(1, np.int64)], 0
    for o in parts:
        out.append(np.asarray(o[1:], np.int64) + base)
        base += int(o[-1])
    return np.concatenate(out)


_TABLES = ("codes", "frame_numbers", "frame_base", "video_shot_offsets", "shot_offsets", "shot_video", "shot_local",
           "shot_first", "shot_last")


class Block:
    """V videos of a store (see the module docstring). Arrays: ``codes`` uint8[K, nb];
    ``frame_numbers`` int32[T]; ``frame_base`` int64[V + 1] (sampled frames of video v:
    ``frame_base[v]:frame_base[v + 1]``); ``video_shot_offsets`` int64[V + 1]; per shot
    ``shot_offsets`` int64[S + 1] (its items), ``shot_video``, ``shot_local``, ``shot_first``,
    ``shot_last`` int32[S] (first/last sampled frame within the video); ``cols`` the method's."""

    def __init__(self, video_ids: List[str], arrays: Mapping[str, np.ndarray], cols: Mapping[str, np.ndarray]):
        self.video_ids = list(video_ids)
        for k in _TABLES:
            setattr(self, k, arrays[k])
        self.cols: Dict[str, np.ndarray] = dict(cols)

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, layout: Mapping[str, Column], nbytes: int = 32) -> "Block":
        z = lambda dt: np.zeros(0, dt)  # noqa: E731
        arrays = {"codes": np.zeros((0, nbytes), np.uint8), "frame_numbers": z(np.int32),
                  "frame_base": np.zeros(1, np.int64), "video_shot_offsets": np.zeros(1, np.int64),
                  "shot_offsets": np.zeros(1, np.int64), "shot_video": z(np.int32), "shot_local": z(np.int32),
                  "shot_first": z(np.int32), "shot_last": z(np.int32)}
        cols = {}
        for name, c in layout.items():
            w = nbytes if c.width == CODES else c.width
            cols[name] = np.zeros(1, np.int64) if c.kind == OFFSETS else np.zeros((0,) if w is None else (0, w), c.dtype)
        return cls([], arrays, cols)

    @classmethod
    def one_video(cls, video_id: str, frame_numbers: np.ndarray, shot_start: np.ndarray, codes: np.ndarray,
                  item_shot: np.ndarray, cols: Mapping[str, np.ndarray]) -> "Block":
        """One video: ``shot_start`` int64[S + 1] (first sampled frame of each shot, then T),
        ``item_shot`` int64[n] (the shot of each item, non-decreasing), OFFSETS columns int64[T + 1]."""
        S, T = len(shot_start) - 1, len(frame_numbers)
        so = np.zeros(S + 1, np.int64)
        np.cumsum(np.bincount(item_shot, minlength=S), out=so[1:])
        arrays = {"codes": np.ascontiguousarray(codes, np.uint8), "frame_numbers": frame_numbers.astype(np.int32),
                  "frame_base": np.array([0, T], np.int64), "video_shot_offsets": np.array([0, S], np.int64),
                  "shot_offsets": so, "shot_video": np.zeros(S, np.int32), "shot_local": np.arange(S, dtype=np.int32),
                  "shot_first": shot_start[:-1].astype(np.int32), "shot_last": (shot_start[1:] - 1).astype(np.int32)}
        return cls([video_id], arrays, cols)

    @classmethod
    def merge(cls, blocks: Sequence["Block"], layout: Mapping[str, Column]) -> "Block":
        """The blocks' videos, in order, in one block (a copy)."""
        if len(blocks) == 1:
            return blocks[0]
        cat = lambda k: np.concatenate([getattr(b, k) for b in blocks])  # noqa: E731
        vbase = np.cumsum([0] + [len(b.video_ids) for b in blocks[:-1]])
        arrays = {"codes": np.ascontiguousarray(cat("codes")), "frame_numbers": cat("frame_numbers"),
                  "shot_local": cat("shot_local"), "shot_first": cat("shot_first"), "shot_last": cat("shot_last"),
                  "shot_video": np.concatenate([b.shot_video + np.int32(o) for b, o in zip(blocks, vbase)])}
        for k in ("frame_base", "video_shot_offsets", "shot_offsets"):
            arrays[k] = _concat_csr([getattr(b, k) for b in blocks])
        cols = {}
        for name, c in layout.items():
            parts = [b.cols[name] for b in blocks]
            cols[name] = _concat_csr(parts) if c.kind == OFFSETS else np.ascontiguousarray(np.concatenate(parts))
        return cls(sum((b.video_ids for b in blocks), []), arrays, cols)

    # ------------------------------------------------------------------ access
    def arrays(self) -> Dict[str, np.ndarray]:
        """Every array by name (tables and columns), as persisted."""
        out = {k: getattr(self, k) for k in _TABLES}
        out.update(self.cols)
        return out

    @property
    def n_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def n_shots(self) -> int:
        return len(self.shot_local)

    def nbytes(self, names) -> int:
        return int(sum(self.arrays()[k].nbytes for k in names))

    def shot_of_item(self, i: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.shot_offsets, i, side="right") - 1

    def frame_number(self, s: int, f: int) -> int:
        """Decoding-order number of sampled frame ``f`` (within the video) of global shot ``s``."""
        return int(self.frame_numbers[int(self.frame_base[int(self.shot_video[s])]) + f])

    # ------------------------------------------------------------------ validation
    def check(self, layout: Mapping[str, Column]) -> None:
        """Raises ValueError naming the first array whose shape, dtype or values are inconsistent."""
        def need(ok, what):
            if not ok:
                raise ValueError(f"inconsistent index: {what}")

        def csr(name, a, n, total):
            need(a.dtype == np.int64 and a.shape == (n + 1,), f"{name} must be int64[{n + 1}]")
            need(a[0] == 0 and a[-1] == total and bool(np.all(np.diff(a) >= 0)),
                 f"{name} must rise monotonically from 0 to {total}")

        V = len(self.video_ids)
        need(all(isinstance(v, str) and v for v in self.video_ids) and len(set(self.video_ids)) == V,
             "video ids must be distinct non-empty strings")
        c = self.codes
        need(c.dtype == np.uint8 and c.ndim == 2 and c.shape[1] > 0 and c.shape[1] % 8 == 0,
             "codes must be uint8[n, nbytes] with nbytes a positive multiple of 8")
        K, T, S = c.shape[0], len(self.frame_numbers), len(self.shot_local)
        need(self.frame_numbers.dtype == np.int32 and self.frame_numbers.ndim == 1, "frame_numbers must be int32[T]")
        csr("frame_base", self.frame_base, V, T)
        csr("video_shot_offsets", self.video_shot_offsets, V, S)
        csr("shot_offsets", self.shot_offsets, S, K)
        need(bool(np.all(np.diff(self.frame_base) > 0)) and bool(np.all(np.diff(self.video_shot_offsets) > 0)),
             "every video must have a frame and a shot")
        for k in ("shot_video", "shot_local", "shot_first", "shot_last"):
            a = getattr(self, k)
            need(a.dtype == np.int32 and a.shape == (S,), f"{k} must be int32[{S}]")
        vso = self.video_shot_offsets
        sv = np.repeat(np.arange(V, dtype=np.int64), np.diff(vso))
        need(bool(np.array_equal(self.shot_video, sv)), "shot_video does not match video_shot_offsets")
        need(bool(np.array_equal(self.shot_local, np.arange(S) - vso[sv])), "shot_local must number each video's shots")
        first, last = self.shot_first.astype(np.int64), self.shot_last.astype(np.int64)
        nframes = np.diff(self.frame_base)
        need(bool(np.all(first <= last)) and bool(np.all(first[vso[:-1]] == 0))
             and bool(np.all(last[vso[1:] - 1] == nframes - 1)), "shots must cover their video's frames")
        cont = np.ones(S, bool)
        cont[vso[:-1]] = False
        need(bool(np.all(first[1:][cont[1:]] == last[:-1][cont[1:]] + 1)), "shots must be consecutive frame ranges")
        fn = self.frame_numbers.astype(np.int64)
        inc = np.diff(fn) > 0
        inc[self.frame_base[1:-1] - 1] = True  # a new video restarts the numbering
        need(bool(np.all(fn >= 0)) and bool(np.all(inc)), "frame_numbers must be increasing and >= 0 in each video")
        item_shot = np.repeat(np.arange(S, dtype=np.int64), np.diff(self.shot_offsets))
        g0 = self.frame_base[self.shot_video.astype(np.int64)] + first  # global first frame of each shot
        rows = {"items": K}
        for name, col in layout.items():  # ROWS groups' sizes come from their offsets
            if col.kind == OFFSETS:
                a = self.cols[name]
                need(a.dtype == np.int64 and a.shape == (T + 1,), f"{name} must be int64[{T + 1}]")
                rows[col.table] = int(a[-1])
        for name, col in layout.items():
            a = self.cols[name]
            w = c.shape[1] if col.width == CODES else col.width
            n = {ITEM: K, ROWS: rows.get(col.table, -1), FRAME: T}.get(col.kind)
            if col.kind == OFFSETS:
                csr(name, a, T, rows[col.table])
                if col.table == "items":  # a shot's items are its frames' items
                    need(bool(np.array_equal(a[g0], self.shot_offsets[:-1])), f"{name} does not match shot_offsets")
                continue
            need(a.dtype == np.dtype(col.dtype) and a.shape == ((n,) if w is None else (n, w)),
                 f"{name} must be {np.dtype(col.dtype).name}[{n}{'' if w is None else f', {w}'}]")
            if col.shot_frames and K:
                lo, hi = first[item_shot], last[item_shot]
                ok = np.all((a >= lo[:, None]) & (a <= hi[:, None])) if a.ndim == 2 else np.all((a >= lo) & (a <= hi))
                need(bool(ok), f"{name}: frame ids outside their shot")
        if "span" in self.cols and K:
            need(bool(np.all(self.cols["span"][:, 0] <= self.cols["span"][:, 1])), "span: first frame after the last")

    def view(self, s: int, layout: Mapping[str, Column]) -> "ShotView":
        return ShotView(self, s, layout)


class ShotView:
    """One shot of a block, read-only: ``codes`` (its items), ``F`` (frames), ``first`` (its first
    sampled frame within the video), :meth:`col` (its items' rows of an ITEM column; frame-valued
    columns relative to the shot's first frame) and :meth:`table` (a frame table over its frames)."""

    def __init__(self, block: Block, s: int, layout: Mapping[str, Column]):
        if not 0 <= s < block.n_shots:
            raise IndexError(f"shot {s} out of range [0, {block.n_shots})")
        self.shot = s
        self._b, self._layout = block, layout
        self.video = int(block.shot_video[s])
        self.first = int(block.shot_first[s])
        self.F = int(block.shot_last[s]) - self.first + 1
        self.lo, self.hi = int(block.shot_offsets[s]), int(block.shot_offsets[s + 1])
        self.g0 = int(block.frame_base[self.video]) + self.first  # global index of the first frame
        self.codes = block.codes[self.lo:self.hi]

    def col(self, name: str) -> np.ndarray:
        a = self._b.cols[name][self.lo:self.hi]
        return a - self.first if self._layout[name].shot_frames else a

    def table(self, offsets: str) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """(int64[F + 1] offsets from 0, {column: rows of the shot's frames}) of a frame table;
        the table ``"items"`` has the columns ``codes`` and the ITEM columns."""
        off = self._b.cols[offsets][self.g0:self.g0 + self.F + 1]
        o0, o1 = int(off[0]), int(off[-1])
        t = self._layout[offsets].table
        if t == "items":
            rows = {"codes": self.codes, **{k: self.col(k) for k, c in self._layout.items() if c.kind == ITEM}}
        else:
            rows = {k: self._b.cols[k][o0:o1] for k, c in self._layout.items() if c.kind == ROWS and c.table == t}
        return off - o0, rows

    def frame_numbers(self) -> np.ndarray:
        return self._b.frame_numbers[self.g0:self.g0 + self.F]

    def frame_col(self, name: str) -> np.ndarray:
        """The shot's frames' rows of a FRAME column."""
        return self._b.cols[name][self.g0:self.g0 + self.F]
