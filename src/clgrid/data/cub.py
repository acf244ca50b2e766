"""CUB-200-2011 (Wah et al. 2011, Caltech-UCSD Birds, CNS-TR-2011-001) from its official archive.

The archive unpacks to ``CUB_200_2011/`` with ``images.txt`` (id, path),
``image_class_labels.txt`` (id, 1-based class), ``train_test_split.txt`` (id,
1 = train), ``classes.txt`` (id, ``NNN.Name``) and ``images/<class>/<file>.jpg``.
The official split is 5994 train / 5794 test images; samples keep the order of
``images.txt``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clgrid.data.arrays import Split

URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
MD5 = "97eceeb196236b17998738112f37df78"
FOLDER = "CUB_200_2011"
FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def present(root: str) -> bool:
    base = Path(root) / FOLDER
    return all((base / f).is_file() for f in FILES) and (base / "images").is_dir()


def download(root: str) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(URL, download_root=root, filename="CUB_200_2011.tgz", md5=MD5)


def _table(path: Path) -> dict[int, str]:
    """``<id> <value>`` per line → {id: value}; the value may hold spaces."""
    table = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if not value:
            raise ValueError(f"'{path}' line {n}: expected '<id> <value>', got {line!r}")
        table[int(key)] = value.strip()
    return table


def read(root: str) -> tuple[Split, Split, list[str]]:
    """Train and test splits of an unpacked CUB-200-2011 under ``root``; class names drop the ``NNN.`` prefix."""
    from PIL import Image

    base = Path(root) / FOLDER
    missing = [f for f in (*FILES, "images") if not (base / f).exists()]
    if missing:
        raise FileNotFoundError(f"CUB-200-2011 under '{base}' lacks {missing}; unpack CUB_200_2011.tgz into '{root}'")
    paths = _table(base / "images.txt")
    labels = {k: int(v) - 1 for k, v in _table(base / "image_class_labels.txt").items()}
    is_train = {k: v == "1" for k, v in _table(base / "train_test_split.txt").items()}
    class_table = _table(base / "classes.txt")
    classes = [class_table[k].split(".", 1)[-1] for k in sorted(class_table)]
    ids = list(paths)  # images.txt order
    lacking = [i for i in ids if i not in labels or i not in is_train]
    if lacking:
        raise ValueError(f"'{base}': image ids {lacking[:5]} have no label or no train/test flag")

    def split(train: bool) -> Split:
        chosen = [i for i in ids if is_train[i] == train]
        files = [base / "images" / paths[i] for i in chosen]
        return Split(np.asarray([labels[i] for i in chosen], np.int64), decode=lambda k: Image.open(files[k]))

    return split(True), split(False), classes
