"""SemArt (Garcia & Vogiatzis 2018; thesis ch. 7): paintings with an artistic comment and attributes.

The published layout, read by :func:`read_semart`::

    SemArt/
      semart_train.csv  semart_val.csv  semart_test.csv     tab-separated, Windows-1252 text
      Images/<IMAGE_FILE>                                  one folder for every split

with the header ``IMAGE_FILE DESCRIPTION AUTHOR TITLE TECHNIQUE DATE TYPE SCHOOL TIMEFRAME``.
:func:`write_synthetic_semart` writes a set in exactly that layout from the synthetic scene
generator (the painted objects drive the comment's, the title's and the attributes' words), so
that Text2Art runs offline.
"""
from __future__ import annotations

import csv
import io
import os
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union


__all__ = ["SEMART_COLUMNS", "ATTRIBUTES", "SemArtItem", "read_semart", "semart_split_path",
           "write_synthetic_semart"]

PathLike = Union[str, os.PathLike]

SEMART_COLUMNS = ("IMAGE_FILE", "DESCRIPTION", "AUTHOR", "TITLE", "TECHNIQUE", "DATE", "TYPE", "SCHOOL",
                  "TIMEFRAME")
#: the attribute columns a classifier of the AMD variant can predict
ATTRIBUTES = ("AUTHOR", "TYPE", "SCHOOL", "TIMEFRAME")


@dataclass(frozen=True)
class SemArtItem:
    image_file: str
    description: str
    author: str
    title: str
    technique: str
    date: str
    type: str
    school: str
    timeframe: str
    path: str  # the image's full path

    def attribute(self, name: str) -> str:
        return getattr(self, name.lower())


def semart_split_path(root: PathLike, split: str) -> str:
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    return os.path.join(os.fspath(root), f"semart_{split}.csv")


def read_semart(csv_path: PathLike, image_dir: Optional[PathLike] = None, check_images: bool = True,
                encoding: str = "cp1252") -> List[SemArtItem]:
    """Reads one SemArt split.

    Args:
        csv_path: ``semart_<split>.csv`` (tab-separated, Windows-1252 as published).
        image_dir: the image folder (default: ``Images/`` beside the CSV).
        check_images: raise if an image file is missing.

    Raises:
        FileNotFoundError: the CSV or an image is missing (the file and line are named).
        ValueError: an empty file, missing columns, a short row, undecodable text, an empty image
            name or comment (the file and line are named).
    """
    p = os.fspath(csv_path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"SemArt split not found: {p}")
    image_dir = os.fspath(image_dir) if image_dir is not None else os.path.join(os.path.dirname(p), "Images")
    with open(p, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{p}:{line}: cannot decode the text as {encoding} ({e.reason} at byte {e.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    rows = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or not any(c.strip() for c in rows[0]):
        raise ValueError(f"{p}: empty file (expected a header with {', '.join(SEMART_COLUMNS)})")
    header = [c.strip().upper() for c in rows[0]]
    missing = [c for c in SEMART_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{p}:1: missing column(s) {missing}; the header has {header}")
    col = {c: header.index(c) for c in SEMART_COLUMNS}
    items: List[SemArtItem] = []
    for ln, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) < len(header):
            raise ValueError(f"{p}:{ln}: expected {len(header)} tab-separated fields, got {len(row)}")
        v = {c: row[i].strip() for c, i in col.items()}
        if not v["IMAGE_FILE"]:
            raise ValueError(f"{p}:{ln}: empty IMAGE_FILE")
        if not v["DESCRIPTION"]:
            raise ValueError(f"{p}:{ln}: empty DESCRIPTION for {v['IMAGE_FILE']}")
        path = os.path.join(image_dir, v["IMAGE_FILE"])
        if check_images and not os.path.isfile(path):
            raise FileNotFoundError(f"{p}:{ln}: image not found: {path}")
        items.append(SemArtItem(v["IMAGE_FILE"], v["DESCRIPTION"], v["AUTHOR"], v["TITLE"], v["TECHNIQUE"],
                                v["DATE"], v["TYPE"], v["SCHOOL"], v["TIMEFRAME"], path))
    if not items:
        raise ValueError(f"{p}: no samples after the header")
    return items


# ------------------------------------------------------------------------------------------
# the synthetic art set

_TYPES = ("religious", "landscape", "still-life", "mythological", "genre", "portrait", "historical",
          "interior", "study", "other")
_SCHOOLS = ("Italian", "Flemish", "Dutch", "French", "Spanish", "German", "English", "Venetian")
_SURNAMES = ("VERANT", "HOLBRACK", "DI LUCCO", "MARSEN", "OUDRY", "CASTEL", "BRUGEN", "FALCONE", "LINDQVIST",
             "ROSSO", "TEMPEL", "ALVARO", "DUCROS", "VAN HEEL", "SPADA", "MORLAND")
_GIVEN = ("Pieter", "Giovanni", "Jacques", "Anna", "Francesco", "Clara", "Jan", "Luis")
_TECHNIQUES = ("Oil on canvas", "Oil on panel", "Tempera on wood", "Fresco", "Watercolour on paper")
_OPENERS = ("This painting shows", "The artist depicts", "In this work the painter renders",
            "The composition presents", "Here we see")
_CLOSERS = ("The handling of the {tex} surfaces is typical of the {school} school of the period.",
            "Painted around {year}, the picture was long attributed to a follower of the master.",
            "The {colour} tones dominate the palette, a choice the painter repeated in later works.",
            "The work belongs to the painter's {type} pictures.",
            "Scholars have compared its {shape} motif with the painter's earlier studies.")


def _timeframe(year: int) -> str:
    lo = 801 + ((year - 801) // 50) * 50
    return f"{lo}-{lo + 49}"


def write_synthetic_semart(root: PathLike, n: int = 300, splits: Tuple[float, float, float] = (0.8, 0.1, 0.1),
                           image_size: Tuple[int, int] = (96, 128), seed: int = 0) -> Dict[str, int]:
    """Writes a synthetic SemArt set (CSV files in Windows-1252, ``Images/`` JPEGs) under ``root``.

    Every painting is a synthetic scene; its comment (2-4 sentences) describes what is painted
    (objects, colours, textures, relations, taken from the scene's captions and regions) in an
    art-historical register with the author, school and date woven in; its title names the main
    subject; TYPE, SCHOOL, AUTHOR and the date follow the scene's theme, so that attributes are
    predictable from the image, as in the real set.

    Returns:
        the number of samples written per split.
    """
    from .synthetic_scenes import SyntheticScenes
    from .synthetic_shapes import save_jpeg

    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise ValueError(f"write_synthetic_semart: n must be an int >= 3, got {n!r}")
    if len(splits) != 3 or any(s < 0 for s in splits) or not sum(splits) > 0:
        raise ValueError(f"write_synthetic_semart: splits must be three fractions >= 0, got {splits!r}")
    root = os.fspath(root)
    os.makedirs(os.path.join(root, "Images"), exist_ok=True)
    ds = SyntheticScenes(n, image_size=image_size, seed=seed, themes=8, theme_strength=0.8, captions_per_image=3)
    rng = random.Random(f"semvis.semart/{seed}")
    authors = []
    for t in range(8):  # two painters per theme, each with a school and a working period
        for _ in range(2):
            authors.append((f"{rng.choice(_SURNAMES)}, {rng.choice(_GIVEN)}", _SCHOOLS[t % len(_SCHOOLS)],
                            1400 + 40 * t + rng.randrange(40)))
    rows = []
    for i in range(n):
        sc = ds[i]
        theme = max(sc.theme, 0)
        r = random.Random(f"semvis.semart/{seed}/{i}")
        author, school, born = authors[2 * theme + r.randrange(2)]
        year = born + 25 + r.randrange(30)
        typ = _TYPES[theme % len(_TYPES)]
        main = max(sc.objects, key=lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1])) if sc.objects else None
        subject = f"{main.colour} {main.shape}" if main else "empty room"
        title = r.choice((f"Still-Life with a {subject}", f"Study of a {subject}", f"The {subject}",
                          f"Composition with {len(sc.objects)} figures", f"{typ.capitalize()} with a {subject}"))
        caps = [c.rstrip(".") for c in sc.captions] or ["an empty ground"]
        phrases = [reg.phrase for reg in sc.regions][:3]
        body = f"{r.choice(_OPENERS)} {caps[0][0].lower() + caps[0][1:]}."
        if phrases:
            body += " " + " ".join(f"{p[0].upper() + p[1:]}." for p in phrases[:2])
        closer = r.choice(_CLOSERS).format(tex=main.texture if main else "plain", school=school, year=year,
                                           colour=main.colour if main else "grey", type=typ,
                                           shape=main.shape if main else "empty")
        comment = f"{body} {closer}"
        fname = f"{i + 1:05d}-{author.split(',')[0].lower().replace(' ', '')}-{typ}.jpg"
        save_jpeg(sc.image, os.path.join(root, "Images", fname))
        rows.append([fname, comment, author, title, f"{r.choice(_TECHNIQUES)}, {40 + r.randrange(80)} x "
                     f"{50 + r.randrange(90)} cm", f"c. {year}", typ, school, _timeframe(year)])
    order = list(range(n))
    random.Random(f"semvis.semart/split/{seed}").shuffle(order)
    total = sum(splits)
    n_train = int(round(n * splits[0] / total))
    n_val = int(round(n * splits[1] / total))
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    counts = {}
    for split, idx in parts.items():
        with open(semart_split_path(root, split), "w", encoding="cp1252", newline="") as f:
            f.write("\t".join(SEMART_COLUMNS) + "\r\n")
            for j in sorted(idx):
                f.write("\t".join(rows[j]) + "\r\n")
        counts[split] = len(idx)
    return counts
