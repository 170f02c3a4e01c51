"""The video index in shards: indexed by Ray tasks (one per video), searched by Ray actors.

    from semvis.video.shards import index_sharded, ShardedIndex
    index_sharded([("movie1", "movie1.mp4"), ("movie2", "movie2.mp4")], "index_dir",
                  videos_per_shard=8)               # a local Ray instance; address="auto" for a cluster
    with ShardedIndex.open("index_dir", use_ray=True) as idx:   # or use_ray=False: in-process
        idx.search(photo, top=5)                    # the same hits as one VideoIndex of those videos

Indexing: every video is one Ray task that runs the single-process path of
:meth:`VideoIndex.process <semvis.video.VideoIndex.process>` (decode, ORB, tracking, shots,
aggregation) and returns its arrays. The videos are split, in the order given, into shards of
``videos_per_shard``; as soon as all videos of a shard are done the driver writes the shard, a
normal index file (:meth:`VideoIndex.save`: its own BinaryKDTree, the checksummed format of
:mod:`~semvis.video.persist`, written atomically), and then the manifest ``manifest.json``
(also atomic): the configuration, the plan (the video ids of every shard) and, for every shard
written, its file, SHA-256 and counts. A task whose worker process dies is retried by Ray
(``max_retries``); a shard is written once, from the one result of each of its videos, so a retry
can neither lose nor duplicate a video. A run that stops (crash, interrupt) resumes from the
manifest: called again with the same videos, configuration and ``videos_per_shard``, it indexes
only the videos of the shards not yet written (finished videos whose shard was not complete are
redone: the unit of resumption is the shard; ``videos_per_shard=1`` makes it the video).

Search (:class:`ShardedIndex`): the query's features are extracted once; every shard gives each
query descriptor's nearest key (distance, item, shot); the nearest over the shards wins, ties to
the earlier shard, which is the single index's rule (ties to the lowest item; the shards hold the
videos in order); the votes, the verification of the most-voted shots (by the shards that hold
them) and the ranking are :func:`semvis.video.search.rank_shots`, the single index's code. So the
hits are exactly those of one :class:`~semvis.video.VideoIndex` built from the same videos in the
same order, with ``exact=True`` or whenever the kd-tree search visits every leaf. With a budget B
of leaves, every shard visits B leaves of its own tree (up to ``n_shards`` x B in all): the nearest
keys found can differ from one tree's, as two trees over the same keys differ.

Limits: the ``"global"`` method (shot embeddings) is not sharded. On a multi-node cluster the
videos and the output folder must be on a file system every node sees (the paths are passed as
they are).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import warnings
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .config import VideoIndexConfig

__all__ = ["index_sharded", "ShardedIndex", "connect", "MANIFEST", "FORMAT", "VERSION"]

MANIFEST = "manifest.json"
FORMAT = "semvis-video-shards"
VERSION = 1
_HOSTPORT = re.compile(r"^(ray://)?[A-Za-z0-9_.\-\[\]:]*[A-Za-z0-9_.\-\]]:\d{1,5}$")


# ------------------------------------------------------------------ Ray
def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError(f'the sharded video index on Ray needs Ray: pip install "semvis[distributed]" ({e})') from None
    return ray


def check_address(address: Optional[str]) -> Optional[str]:
    """``address`` if it is None (a local Ray instance), ``"auto"`` or ``host:port`` /
    ``ray://host:port`` with a port in 1..65535; ValueError naming ``address`` otherwise."""
    if address is None or address == "auto":
        return address
    if not isinstance(address, str):
        raise ValueError(f"address: must be 'auto', 'host:port' or 'ray://host:port', got {address!r}")
    if not _HOSTPORT.match(address) or not 1 <= int(address.rsplit(":", 1)[1]) <= 65535:
        raise ValueError(f"address: {address!r} is not a Ray address ('auto', 'host:port' or 'ray://host:port', "
                         "port in 1..65535)")
    return address


def _probe(address: str, timeout: float = 5.0) -> None:
    """ValueError naming ``address`` unless something accepts a TCP connection there."""
    import socket

    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, port = hostport.rsplit(":", 1)
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ValueError(f"address: nothing answers at {address!r} ({e.strerror or type(e).__name__}); is the Ray "
                         "head running there?") from None


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None):
    """(ray, started): Ray, connected. If this process is already connected, that connection
    is used (an address is still checked). Otherwise ``address=None`` starts a local instance
    with ``num_cpus`` CPUs (default: all), no dashboard and quiet logging; an address connects to
    that cluster (ValueError naming ``address`` if it is malformed or nothing accepts a connection
    there within 5 s). ``started``: whether this call
    connected (the caller then calls ``ray.shutdown()``)."""
    check_address(address)
    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
        raise ValueError(f"num_cpus: must be an int >= 1 or None, got {num_cpus!r}")
    if address not in (None, "auto"):  # Ray would retry an address where nothing listens for minutes
        _probe(address)
    ray = _import_ray()
    if ray.is_initialized():
        return ray, False
    kw = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    if address is None:
        ray.init(num_cpus=num_cpus, **kw)
    else:
        try:
            ray.init(address=address, **kw)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError, OSError) as e:
            raise ValueError(f"address: cannot connect to a Ray cluster at {address!r} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return ray, True


def _process(cfg: dict, source, video_id: str, threads: Optional[int]):
    """One video (the Ray task, or a call in-process): ("ok", block, info, stats), or ("error",
    message) for a video that cannot be read (it is reported, not retried)."""
    from .index import VideoIndex
    from .io import VideoReadError

    idx = VideoIndex(cfg, progress=False, threads=threads)
    try:
        block, info, stats = idx.process(source, video_id)
    except (VideoReadError, ValueError, TypeError, OSError) as e:
        return "error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return "ok", block, info, stats


# ------------------------------------------------------------------ manifest
def _sha_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _manifest_path(path) -> str:
    p = os.fspath(path)
    return os.path.join(p, MANIFEST) if os.path.isdir(p) else p


def read_manifest(path) -> dict:
    """The manifest of a sharded index (its folder or the ``manifest.json``), its structure
    checked (ValueError naming the file; FileNotFoundError if there is none). The shard files
    are not checked here (see :meth:`ShardedIndex.open`)."""
    mpath = _manifest_path(path)
    if not os.path.isfile(mpath):
        raise FileNotFoundError(f"manifest: {mpath}: no such file (not a sharded video index)")

    def bad(why):
        return ValueError(f"manifest: {mpath}: {why}")

    try:
        with open(mpath) as f:
            m = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"not a manifest (invalid JSON: {e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise bad("not a sharded video index manifest (wrong format tag)")
    if m.get("version") != VERSION:
        raise bad(f"unsupported version {m.get('version')!r} (this semvis reads version {VERSION})")
    plan, shards = m.get("plan"), m.get("shards")
    if not isinstance(plan, list) or not plan or not all(isinstance(p, list) and p and all(
            isinstance(v, str) and v for v in p) for p in plan):
        raise bad("corrupt plan (video ids of every shard)")
    ids = [v for p in plan for v in p]
    if len(set(ids)) != len(ids):
        raise bad("a video appears twice in the plan")
    if not isinstance(shards, list):
        raise bad("corrupt shard list")
    seen = set()
    for e in shards:
        if not isinstance(e, dict) or not isinstance(e.get("index"), int) or not 0 <= e["index"] < len(plan) \
                or e["index"] in seen or not isinstance(e.get("file"), str) or os.path.basename(e["file"]) != e["file"] \
                or not isinstance(e.get("sha256"), str) or not isinstance(e.get("videos"), list) \
                or not isinstance(e.get("failed", {}), dict) \
                or sorted(e["videos"] + list(e.get("failed", {}))) != sorted(plan[e["index"]]):
            raise bad(f"corrupt shard entry {e!r:.200}")
        seen.add(e["index"])
    try:
        m["config"] = VideoIndexConfig.from_dict(m.get("config")).to_dict()
    except (TypeError, ValueError) as e:
        raise bad(f"invalid configuration ({e})") from None
    m["shards"] = sorted(shards, key=lambda e: e["index"])
    return m


def _videos(videos) -> List[Tuple[str, object]]:
    if isinstance(videos, Mapping):
        videos = list(videos.items())
    if isinstance(videos, (str, bytes, os.PathLike)) or not isinstance(videos, Sequence):
        raise TypeError("videos: must be a list of (video_id, source) pairs or a dict {video_id: source}")
    out = []
    for p in videos:
        if not isinstance(p, (tuple, list)) or len(p) != 2 or not isinstance(p[0], str) or not p[0]:
            raise TypeError(f"videos: every entry must be a (video_id: non-empty str, source) pair, got {p!r:.80}")
        out.append((p[0], p[1]))
    if not out:
        raise ValueError("videos: no video to index (the list is empty)")
    ids = [v for v, _ in out]
    if len(set(ids)) != len(ids):
        dup = sorted({v for v in ids if ids.count(v) > 1})
        raise ValueError(f"videos: video ids must be unique, {dup[:5]} appear more than once")
    return out


# ------------------------------------------------------------------ indexing
def index_sharded(videos, out: Union[str, os.PathLike], config: Union[VideoIndexConfig, dict, None] = None, *,
                  videos_per_shard: int = 8, use_ray: bool = True, address: Optional[str] = None,
                  num_cpus: Optional[int] = None, max_retries: int = 3, threads: Optional[int] = None,
                  on_video: Optional[Callable[[str, dict], None]] = None,
                  on_shard: Optional[Callable[[dict], None]] = None, **fields) -> dict:
    """Indexes videos into the shards of folder ``out`` (created), one Ray task per video; resumes
    an interrupted run of the same videos (see the module docstring).

    Args:
        videos: ``[(video_id, source), ...]`` or ``{video_id: source}``: sources as
            :meth:`VideoIndex.add` takes them (a path, a folder of frames, a uint8 array). Their
            order is the index's order (shard 0 holds the first ``videos_per_shard``).
        out: the output folder (absent, empty, or holding the manifest of an interrupted run).
        config, **fields: the :class:`VideoIndexConfig` (as for :class:`VideoIndex`); not the
            ``"global"`` method.
        videos_per_shard (int >= 1): videos per shard (the last shard may hold fewer).
        use_ray (bool): False runs every video in this process (same files; no Ray needed).
        address (str, optional): a Ray cluster (``"auto"``, ``"host:port"``, ``"ray://host:port"``);
            None: a local Ray instance with ``num_cpus`` CPUs (if this process is not connected yet).
        max_retries (int >= 0): Ray's retries of a task whose worker died.
        threads (int, optional): ORB threads per video (default: 1 on Ray, where a task has one
            CPU; the extractor's default in-process).
        on_video(video_id, info), on_shard(entry): called in this process as each video's result
            arrives and after each shard is written and recorded (``entry``: its manifest entry).

    Returns:
        dict: ``videos`` (planned), ``processed`` (videos run in this call), ``skipped`` (done
        before: their shards were in the manifest), ``failed`` ({video_id: message}: videos that
        could not be read, left out of their shard), ``shards``, ``frames`` (processed in this
        call), ``seconds`` (wall time), ``manifest`` (its path).
    """
    from .index import VideoIndex

    t_start = time.perf_counter()
    vids = _videos(videos)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads: must be an int >= 1 or None, got {threads!r}")
    threads = threads if threads is not None else (1 if use_ray else None)
    if isinstance(videos_per_shard, bool) or not isinstance(videos_per_shard, int) or videos_per_shard < 1:
        raise ValueError(f"videos_per_shard: must be an int >= 1, got {videos_per_shard!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries: must be an int >= 0, got {max_retries!r}")
    if not isinstance(use_ray, bool):
        raise TypeError(f"use_ray: must be True or False, got {use_ray!r}")
    if not use_ray and address is not None:
        raise ValueError("address: given with use_ray=False")
    check_address(address)
    if address not in (None, "auto"):  # before anything is written
        _probe(address)
    if isinstance(config, VideoIndexConfig):
        cfg = config.replace(**fields) if fields else config.validate()
    elif config is None or isinstance(config, dict):
        cfg = VideoIndexConfig.from_dict({**(config or {}), **fields})
    else:
        raise TypeError(f"config: must be a VideoIndexConfig or a dict, got {type(config).__name__}")
    if cfg.method == "global":
        raise ValueError("config: method 'global' is not sharded (use 'aggregation', 'all' or 'keyframes')")
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out: {out} exists and is not a folder")
    os.makedirs(out, exist_ok=True)
    mpath = os.path.join(out, MANIFEST)
    plan = [[v for v, _ in vids[a:a + videos_per_shard]] for a in range(0, len(vids), videos_per_shard)]
    cfg_dict = cfg.to_dict()
    done: Dict[int, dict] = {}
    if os.path.exists(mpath):  # resume
        m = read_manifest(mpath)
        if m["config"] != cfg_dict:
            raise ValueError(f"out: {out} holds an index of another configuration (start a new folder)")
        if m["plan"] != plan:
            raise ValueError(f"out: {out} holds an index of other videos or another videos_per_shard "
                             "(start a new folder)")
        for e in m["shards"]:
            f = os.path.join(out, e["file"])
            if os.path.isfile(f) and _sha_file(f) == e["sha256"]:
                done[e["index"]] = e
            else:
                warnings.warn(f"{f}: missing or not the file the manifest lists; its videos are indexed again",
                              RuntimeWarning)
    elif any(not n.startswith(".") for n in os.listdir(out)):
        raise ValueError(f"out: {out} is not empty and holds no {MANIFEST} (not an interrupted sharded index)")
    manifest = {"format": FORMAT, "version": VERSION, "config": cfg_dict, "videos_per_shard": videos_per_shard,
                "plan": plan, "shards": sorted(done.values(), key=lambda e: e["index"])}
    _write_json(mpath, manifest)

    source = dict(vids)
    todo = [j for j in range(len(plan)) if j not in done]
    results: Dict[int, Dict[str, tuple]] = {j: {} for j in todo}
    shard_of = {v: j for j in todo for v in plan[j]}
    summary = {"videos": len(vids), "processed": 0, "skipped": sum(len(plan[j]) for j in done), "failed": {},
               "shards": len(plan), "frames": 0, "manifest": mpath}
    for e in done.values():
        summary["failed"].update(e.get("failed", {}))

    def finish(v: str, res: tuple) -> None:
        j = shard_of[v]
        results[j][v] = res
        summary["processed"] += 1
        if res[0] == "ok":
            summary["frames"] += int(res[2]["frames"])
        else:
            summary["failed"][v] = res[1]
        if on_video is not None:
            on_video(v, res[2] if res[0] == "ok" else {"error": res[1]})
        if len(results[j]) < len(plan[j]):
            return
        ok = [results[j][u] for u in plan[j] if results[j][u][0] == "ok"]
        stats: Dict[str, float] = {}
        for r in ok:
            for k, x in r[3].items():
                stats[k] = stats.get(k, 0) + x
        idx = VideoIndex.from_blocks(cfg, [r[1] for r in ok], stats)
        name = f"shard-{j:05d}.svx"
        path = os.path.join(out, name)
        idx.save(path)
        entry = {"index": j, "file": name, "videos": [u for u in plan[j] if results[j][u][0] == "ok"],
                 "failed": {u: results[j][u][1] for u in plan[j] if results[j][u][0] != "ok"},
                 "sha256": _sha_file(path), "bytes": os.path.getsize(path), "items": int(idx.n_items),
                 "shots": int(idx._store.n_shots), "frames": int(stats.get("frames", 0))}
        del results[j]
        manifest["shards"] = sorted(manifest["shards"] + [entry], key=lambda e: e["index"])
        _write_json(mpath, manifest)
        if on_shard is not None:
            on_shard(entry)

    order = [v for j in todo for v in plan[j]]
    if not use_ray:
        for v in order:
            finish(v, _process(cfg_dict, source[v], v, threads))
    elif order:
        ray, started = connect(address, num_cpus)
        refs: Dict[object, str] = {}
        try:
            task = ray.remote(num_cpus=1, max_retries=max_retries)(_process)
            refs = {task.remote(cfg_dict, source[v], v, threads): v for v in order}
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for r in ready:
                    finish(refs.pop(r), ray.get(r))
        finally:
            for r in refs:  # interrupted: the rest is not wanted any more
                try:
                    ray.cancel(r, force=True)
                except Exception:  # noqa: BLE001 - best effort; the task may have finished
                    pass
            if started:
                ray.shutdown()
    summary["seconds"] = time.perf_counter() - t_start
    return summary


# ------------------------------------------------------------------ search
class _Shard:
    """One shard, memory-mapped (in this process, or as a Ray actor)."""

    def __init__(self, path: str, mmap: bool = True):
        from .index import VideoIndex

        self.index = VideoIndex.load(path, progress=False, mmap=mmap)

    def info(self) -> dict:
        return {"videos": self.index.video_ids, "shots": int(self.index._store.n_shots),
                "items": int(self.index.n_items), "config": self.index.cfg.to_dict(),
                "nbytes": int(self.index._store.codes.shape[1])}

    def nearest(self, q: np.ndarray, B: int, exact: bool):
        """(distance, item, shot) of each query descriptor's nearest key in this shard (-1: none)."""
        from .search import nearest

        n = len(q)
        if self.index.n_items == 0:
            return np.zeros(n, np.int32), np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        d, i = nearest(self.index, q, B, exact)
        shot = np.full(n, -1, np.int64)
        shot[i >= 0] = self.index._store.shot_of_item(i[i >= 0])
        return d, np.asarray(i, np.int64), shot

    def verify(self, shots: List[int], q: np.ndarray, qkp: np.ndarray):
        """[(verified inliers, hit with score 0)] of this shard's shots."""
        from .search import ShotAccess

        return [(s, h(0.0)) for s, h in ShotAccess(self.index, q, qkp).verify(shots)]

    def unverified(self, shot: int, score: float, q: np.ndarray):
        from .search import ShotAccess

        return ShotAccess(self.index, q, np.zeros((len(q), 2), np.float32)).unverified(shot, score)


class ShardedIndex:
    """A sharded video index written by :func:`index_sharded`, searched as one index.

    Open it with :meth:`open`; :meth:`search` takes what :meth:`VideoIndex.search` takes and
    gives its answer (see the module docstring for when exactly). ``use_ray=True``: one Ray actor
    per shard holds the shard memory-mapped, queries fan out to them in parallel; False: the
    shards are memory-mapped in this process and searched one after the other.
    """

    def __init__(self):
        raise TypeError("ShardedIndex: use ShardedIndex.open(path)")

    @classmethod
    def open(cls, path: Union[str, os.PathLike], use_ray: bool = False, address: Optional[str] = None,
             num_cpus: Optional[int] = None, mmap: bool = True, threads: Optional[int] = None) -> "ShardedIndex":
        """Opens the index in folder ``path`` (or its ``manifest.json``).

        Checks: the manifest's structure, that every shard of the plan was written (an
        interrupted indexing is refused: resume it), that every shard file exists and matches
        the manifest's SHA-256, and that each shard holds the configuration and videos the
        manifest says: ValueError naming the manifest and the shard otherwise.
        """
        from .features import OrbExtractor
        from .methods import method_for

        if not isinstance(use_ray, bool):
            raise TypeError(f"use_ray: must be True or False, got {use_ray!r}")
        if not use_ray and address is not None:
            raise ValueError("address: given with use_ray=False")
        check_address(address)
        m = read_manifest(path)
        mpath = _manifest_path(path)
        folder = os.path.dirname(os.path.abspath(mpath))
        if len(m["shards"]) != len(m["plan"]):
            missing = sorted(set(range(len(m["plan"]))) - {e["index"] for e in m["shards"]})
            raise ValueError(f"manifest: {mpath}: incomplete: shards {missing[:8]} of {len(m['plan'])} were never "
                             "written (indexing was interrupted: run it again to resume)")
        files = []
        for e in m["shards"]:
            f = os.path.join(folder, e["file"])
            if not os.path.isfile(f):
                raise ValueError(f"manifest: {mpath}: shard {e['file']} is missing")
            if _sha_file(f) != e["sha256"]:
                raise ValueError(f"manifest: {mpath}: shard {e['file']} does not match its checksum "
                                 "(corrupt, or replaced by another file)")
            files.append(f)
        self = cls.__new__(cls)
        self.manifest, self.path = m, mpath
        self.cfg = VideoIndexConfig.from_dict(m["config"])
        self.method = method_for(self.cfg)
        self.layout = self.method.layout()
        self.extractor = OrbExtractor(n_features=self.cfg.n_features, width=self.cfg.width, threads=threads)
        self._ray, self._started, self._actors, self._closed, self._infos = None, False, [], False, []
        if use_ray:
            self._ray, self._started = connect(address, num_cpus)
            actor = self._ray.remote(num_cpus=0)(_Shard)
            self._shards = [actor.remote(f, mmap) for f in files]
            self._actors = list(self._shards)
        else:
            self._shards = [_Shard(f, mmap) for f in files]
        try:
            infos = self._call([("info", k, ()) for k in range(len(files))])
        except Exception:
            self.close()
            raise
        for e, info in zip(m["shards"], infos):
            if info["config"] != m["config"] or info["videos"] != e["videos"]:
                self.close()
                raise ValueError(f"manifest: {mpath}: shard {e['file']} holds other videos or another "
                                 "configuration than the manifest lists")
        self._infos = infos
        self._shot_base = np.concatenate([[0], np.cumsum([i["shots"] for i in infos])]).astype(np.int64)
        return self

    # ------------------------------------------------------------------ calls
    def _call(self, calls: List[Tuple[str, int, tuple]]) -> list:
        """[(method, shard, args)] -> results, in parallel on the actors."""
        if self._closed:
            raise ValueError("ShardedIndex: closed")
        if self._ray is None:
            return [getattr(self._shards[k], name)(*args) for name, k, args in calls]
        refs = [getattr(self._shards[k], name).remote(*args) for name, k, args in calls]
        return self._ray.get(refs)

    def close(self) -> None:
        """Ends the actors (and the Ray instance if :meth:`open` started it)."""
        self._closed = True
        if self._ray is not None:
            for a in self._actors:
                try:
                    self._ray.kill(a)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            self._actors, self._shards = [], []
            if self._started:
                self._ray.shutdown()
            self._ray, self._started = None, False
        else:
            self._shards = []

    def __enter__(self) -> "ShardedIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ contents
    @property
    def video_ids(self) -> List[str]:
        return [v for e in self.manifest["shards"] for v in e["videos"]]

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def n_items(self) -> int:
        return sum(i["items"] for i in self._infos)

    @property
    def n_shards(self) -> int:
        return len(self._infos)

    @property
    def verify(self) -> int:
        return self.cfg.verify

    @verify.setter
    def verify(self, value: int) -> None:
        self.cfg = self.cfg.replace(verify=value)

    # ------------------------------------------------------------------ search
    def search(self, image, top: int = 5, backtracks: Optional[int] = None, exact: bool = False,
               features: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> list:
        """As :meth:`VideoIndex.search` over all the shards' videos (see the module docstring)."""
        from .search import _query, check_budget, rank_shots

        if self._closed:
            raise ValueError("ShardedIndex: closed")
        B = check_budget(self.cfg, top, backtracks)
        qkp, q = _query(self, image, features)
        if len(self) == 0:
            raise ValueError("search: the index is empty (no video could be indexed)")
        if q.shape[0] == 0 or self.n_items == 0:
            return []
        nb = self._infos[0]["nbytes"]
        if q.shape[1] != nb:
            raise ValueError(f"search: query descriptors have {q.shape[1]} bytes, the index {nb}")
        live = [k for k, i in enumerate(self._infos) if i["items"] > 0]
        parts = self._call([("nearest", k, (q, B, bool(exact))) for k in live])
        D = np.stack([p[0] for p in parts])
        I = np.stack([p[1] for p in parts])
        Sh = np.stack([p[2] for p in parts])
        key = np.where(I >= 0, D.astype(np.int64), np.iinfo(np.int64).max)
        w = np.argmin(key, axis=0)  # the nearest; ties to the earlier shard (= the lower item)
        cols = np.arange(len(q))
        d = D[w, cols]
        base = self._shot_base[np.asarray(live)][w]
        shot = np.where(I[w, cols] >= 0, base + Sh[w, cols], -1)

        def owner(s: int) -> Tuple[int, int]:
            k = int(np.searchsorted(self._shot_base, s, side="right") - 1)
            return k, s - int(self._shot_base[k])

        def verify(shots):
            by: Dict[int, List[int]] = {}
            for s in shots:
                k, loc = owner(s)
                by.setdefault(k, []).append(loc)
            ks = sorted(by)
            res = dict(zip(ks, self._call([("verify", k, (by[k], q, qkp)) for k in ks])))
            pos = {k: 0 for k in ks}
            out = []
            for s in shots:
                k, _ = owner(s)
                inl, h = res[k][pos[k]]
                pos[k] += 1
                out.append((inl, lambda score, h=h: h._replace(score=float(score))))
            return out

        def unverified(s: int, score: float):
            k, loc = owner(s)
            return self._call([("unverified", k, (loc, score, q))])[0]

        return rank_shots(self.cfg, d, shot, int(self._shot_base[-1]), len(q), int(top), verify, unverified)
