"""File fuzzer for the video index format, run by tests/test_video_persist.py in a subprocess (a
crash or a hang there fails the test instead of killing pytest).

    python tests/video_index_fuzz.py INDEX.svx QUERIES.npz OUT.json [n_flips] [seed]

Cases: truncation at every section boundary of the zip (each member's local header, npy header,
data and end, the central directory, the end record) and one byte around each; random byte flips;
bytes appended or prepended; and crafted files whose header checksums are recomputed (so only the
range checks can refuse them). Every case must either raise ValueError from VideoIndex.load, or
load an index that searches exactly as the original (a crafted file: that searches without error). Writes a JSON summary; exits 1 on any
other outcome (listed in the summary).
"""
import hashlib
import json
import os
import struct
import sys
import tempfile
import traceback
import zipfile

import numpy as np

from semvis.video import VideoIndex


def _sha(a):
    if a.dtype.hasobject:
        return "0" * 64
    return hashlib.sha256(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data).hexdigest()


def read_members(path):
    """(meta dict, {name: array}) of an index file, trusting it (it is our own good file)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    return meta, arrays


def write_members(path, meta, arrays, recompute=True):
    """Writes arrays + meta like VideoIndex.save, the header's checksums recomputed."""
    meta = json.loads(json.dumps(meta))
    if recompute:
        meta["arrays"] = {k: {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": _sha(a)}
                          for k, a in arrays.items()}
    out = dict(arrays)
    out["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **out)


def boundaries(data):
    """Byte offsets where the zip's sections start and end."""
    import io

    out = {0, len(data)}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for i in zf.infolist():
            h = i.header_offset
            n, e = struct.unpack_from("<HH", data, h + 26)
            start = h + 30 + n + e
            out |= {h, h + 30, start, start + 10, start + i.compress_size}
            hl = struct.unpack_from("<H", data, start + 8)[0]  # npy v1 header length
            out.add(start + 10 + hl)
        out.add(zf.start_dir)
    out.add(data.rfind(b"PK\x05\x06"))
    return sorted(o for o in out if 0 <= o <= len(data))


def crafted(meta, arrays):
    """(name, meta, arrays) of hostile files whose checksums are recomputed."""
    def with_(**changes):
        a = dict(arrays)
        for k, v in changes.items():
            if v is None:
                a.pop(k)
            else:
                a[k] = v
        return a

    A = arrays
    cases = []
    c = A["codes"]
    K = c.shape[0]
    if "span" in A:
        s = A["span"].copy()
        s[0, 1] = 1_000_000_000
        cases.append(("span beyond the video", meta, with_(span=s)))
        s = A["span"].copy()
        s[-1, 0] = -5
        cases.append(("negative span", meta, with_(span=s)))
        s = A["span"].copy()
        s[len(s) // 2] = s[len(s) // 2][::-1] + [1, -1]
        cases.append(("span reversed", meta, with_(span=s)))
        cases.append(("span as int64", meta, with_(span=A["span"].astype(np.int64))))
    if "frame_shift" in A:
        cases.append(("frame shift of one frame fewer", meta, with_(frame_shift=np.ascontiguousarray(A["frame_shift"][1:]))))
        cases.append(("frame shift as float", meta, with_(frame_shift=A["frame_shift"].astype(np.float32))))
    so = A["shot_offsets"].copy()
    so[1], so[2] = so[2], so[1]
    cases.append(("shot offsets not monotone", meta, with_(shot_offsets=so)))
    so = A["shot_offsets"].copy()
    so[-1] += 7
    cases.append(("shot offsets beyond the items", meta, with_(shot_offsets=so)))
    sv = A["shot_video"].copy()
    sv[-1] = 99
    cases.append(("shot of a video not in the table", meta, with_(shot_video=sv)))
    sl = A["shot_local"].copy()
    sl[0] = -1
    cases.append(("negative local shot", meta, with_(shot_local=sl)))
    sf = A["shot_first"].copy()
    sf[1] += 1
    cases.append(("shots not consecutive", meta, with_(shot_first=sf)))
    sl = A["shot_last"].copy()
    sl[-1] = 1_000_000_000
    cases.append(("shot beyond the video", meta, with_(shot_last=sl)))
    fb = A["frame_base"].copy()
    fb[-1] += 3
    cases.append(("frame base beyond the frames", meta, with_(frame_base=fb)))
    fn = A["frame_numbers"].copy()
    fn[3] = fn[2]
    cases.append(("frame numbers not increasing", meta, with_(frame_numbers=fn)))
    fn = A["frame_numbers"].copy()
    fn[0] = -1
    cases.append(("negative frame number", meta, with_(frame_numbers=fn)))
    vso = A["video_shot_offsets"].copy()
    vso[1] -= 1
    cases.append(("video shot offsets", meta, with_(video_shot_offsets=vso)))
    for name in ("item_offsets", "sketch_offsets"):
        if name in A:
            o = A[name].copy()
            o[2] = o[-1] + 5
            cases.append((f"{name} not monotone", meta, with_(**{name: o})))
            o = A[name].copy()
            o[1:-1] = np.maximum(o[1:-1] - 1, 0)
            cases.append((f"{name} shifted", meta, with_(**{name: o})))
    cases.append(("codes of 31 bytes", meta, with_(codes=np.ascontiguousarray(c[:, :31]))))
    cases.append(("codes as float", meta, with_(codes=c.astype(np.float32))))
    cases.append(("codes dropped", meta, with_(codes=None)))
    cases.append(("pos dropped", meta, with_(pos=None)))
    cases.append(("one item fewer", meta, with_(codes=np.ascontiguousarray(c[:-1]))))
    cases.append(("an extra array", meta, with_(extra=np.zeros(3))))
    cases.append(("an object array", meta, with_(pos=np.array([{"a": 1}], dtype=object))))
    cases.append(("a 0-d array", meta, with_(frame_base=np.array(5, np.int64))))
    # the kd-tree: ids out of range, negative, or keys not the index's (its own checksums recomputed)
    from semvis_ext import BinaryKDTree

    t = BinaryKDTree.from_bytes(A["tree"])
    for label, ids in (("tree ids beyond the items", np.where(t.ids == 0, K + 5, t.ids)),
                       ("tree ids repeated", np.where(t.ids == 0, 1, t.ids)),
                       ("negative tree ids", np.where(t.ids == 0, -1, t.ids))):
        u = BinaryKDTree.from_bytes(A["tree"])
        u._ids = np.ascontiguousarray(ids, np.int64)
        cases.append((label, meta, with_(tree=np.frombuffer(u.to_bytes(), np.uint8))))
    u = BinaryKDTree.from_bytes(A["tree"])
    u._codes = np.ascontiguousarray(u._codes[::-1])
    cases.append(("tree keys not the index's", meta, with_(tree=np.frombuffer(u.to_bytes(), np.uint8))))
    cases.append(("tree dropped", meta, with_(tree=None)))
    cases.append(("tree truncated", meta, with_(tree=A["tree"][:-64])))
    for label, m in (("duplicate video ids", {**meta, "videos": [meta["videos"][0]] * len(meta["videos"])}),
                     ("video ids not strings", {**meta, "videos": [[1]] * len(meta["videos"])}),
                     ("one video id missing", {**meta, "videos": meta["videos"][:-1]}),
                     ("invalid config", {**meta, "config": {**meta["config"], "verify": -1}}),
                     ("unknown config key", {**meta, "config": {**meta["config"], "zzz": 1}}),
                     ("config not a mapping", {**meta, "config": [1, 2]}),
                     ("wrong version", {**meta, "version": 3}),
                     ("wrong format", {**meta, "format": "other"}),
                     ("stats not a mapping", {**meta, "stats": 5}),
                     ("videos not a list", {**meta, "videos": "abc"})):
        cases.append((label, m, arrays))
    return cases


def main():
    path, qpath, out = sys.argv[1:4]
    n_flips = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    rng = np.random.default_rng(int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    data = open(path, "rb").read()
    z = np.load(qpath)
    queries = [(z[f"q{i}_kp"], z[f"q{i}_desc"]) for i in range(len(z.files) // 2)][:3]
    ref = VideoIndex.load(path, progress=False)
    want = [ref.search(None, top=3, features=q) for q in queries]
    meta, arrays = read_members(path)
    summary = {"cases": 0, "refused": 0, "loaded_identical": 0, "bad": []}
    tmp = tempfile.mkdtemp()

    def case(label, blob=None, build=None, same=True):
        p = os.path.join(tmp, "case.svx")
        if build is not None:
            build(p)
        else:
            with open(p, "wb") as f:
                f.write(blob)
        summary["cases"] += 1
        try:
            idx = VideoIndex.load(p, progress=False)
        except ValueError as e:
            if "pickle" in str(e) or not str(e).startswith("VideoIndex.load: "):
                summary["bad"].append([label, f"message: {e}"])
            else:
                summary["refused"] += 1
            return
        except Exception as e:  # noqa: BLE001 - anything but ValueError is a failure
            summary["bad"].append([label, f"{type(e).__name__}: {e}", traceback.format_exc()[-800:]])
            return
        try:
            got = [idx.search(None, top=3, features=q) for q in queries]
        except Exception as e:  # noqa: BLE001
            summary["bad"].append([label, f"loaded, then search raised {type(e).__name__}: {e}"])
            return
        if same and got != want:  # a byte flip that loads must have changed nothing that matters
            summary["bad"].append([label, "loaded and searched differently"])
        else:
            summary["loaded_identical"] += 1

    for b in boundaries(data):
        for o in (b - 1, b, b + 1):
            if 0 <= o < len(data):
                case(f"truncated at {o}", data[:o])
    for _ in range(n_flips):
        at = int(rng.integers(len(data)))
        blob = bytearray(data)
        blob[at] ^= int(rng.integers(1, 256))
        case(f"byte {at} flipped", bytes(blob))
    case("junk appended", data + b"\0junk")
    case("a second index appended", data + data)
    case("junk prepended", b"junk" + data)
    case("text file", b"this is a text file, not an index\n" * 20)
    case("empty file", b"")
    case("npz of other arrays", build=lambda p: np.savez(p, a=np.zeros(3)))
    case("pickled object array", build=lambda p: np.savez(p, meta=np.array([object()], dtype=object)))
    for label, m, a in crafted(meta, arrays):
        case(label, build=lambda p, m=m, a=a: write_members(p, m, a), same=False)
    json.dump(summary, open(out, "w"), indent=1)
    sys.exit(1 if summary["bad"] else 0)


if __name__ == "__main__":
    main()
