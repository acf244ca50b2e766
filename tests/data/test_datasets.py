"""Dataset registry: every reader is fed tiny files in its dataset's real on-disk format and read offline.

Each family's fixture writes the files torchvision (or our CUB/ImageFolder/.npz
readers) expects, then goes through ``prepare_dataset`` exactly as a job does.
JPEG families use one solid colour per class, so a label that points at the
wrong image shows up as the wrong colour.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from clgrid.data import datasets as ds
from clgrid.data.arrays import ArrayFileError
from clgrid.data.datasets import DATASETS, download_dataset, get_dataset, prepare_dataset
from clgrid.io import file_sha256

NAMES = {
    "digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "cub200", "dtd", "flowers102", "eurosat", "food101",
    "stanford_cars", "oxford_pets", "sun397", "caltech101", "fgvc_aircraft", "imagenet", "flowers17", "cifar10_1",
}
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 210, 40)]


def jpeg(path: Path, colour, size=(24, 16), mode="RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    value = colour if mode == "RGB" else colour[0]
    Image.new(mode, size, value).save(path, quality=95)


def narrow(monkeypatch, name: str, n_classes: int) -> None:
    """Let a fixture with a few classes stand for a dataset with many (the reader still checks the count)."""
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], n_classes=n_classes))


def prepare(name, tmp_path, options=None, raw_dir=None):
    out = tmp_path / "out" / f"{name}.npz"
    meta = prepare_dataset(name, str(out), options or {}, None if raw_dir is None else str(raw_dir))
    return dict(np.load(out)), meta, out


def assert_colours(x, y, colours=COLOURS, tol=8):
    """Each image's mean colour is its label's colour: labels and images were kept together."""
    means = x.reshape(len(x), x.shape[1], -1).mean(axis=2)
    expected = np.asarray(colours, float)[y][:, : x.shape[1]]
    np.testing.assert_allclose(means, expected, atol=tol)


# --- registry ------------------------------------------------------------------------------------


def test_registry_has_exactly_the_agreed_names_and_consistent_fields():
    assert set(DATASETS) == NAMES
    for name, info in DATASETS.items():
        assert info.name == name and info.family in ds.FAMILIES and info.source
        # A variable-size dataset's shape depends on image_size, so the registry does not claim one.
        assert (info.input_shape is None) == (info.default_image_size is not None), name
    assert get_dataset("cifar100").n_classes == 100 and get_dataset("cub200").input_shape is None
    assert get_dataset("eurosat").input_shape == (3, 64, 64)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(KeyError, match="unknown dataset 'mnsit'; valid: caltech101, cifar10"):
        get_dataset("mnsit")


def test_urls_match_torchvision_sources():
    import torchvision.datasets as tvd

    assert DATASETS["mnist"].url == tvd.MNIST.mirrors[0]
    assert DATASETS["fashion_mnist"].url == tvd.FashionMNIST.mirrors[0]
    assert DATASETS["cifar10"].url == tvd.CIFAR10.url and DATASETS["cifar100"].url == tvd.CIFAR100.url
    assert DATASETS["dtd"].url == tvd.DTD._URL and DATASETS["food101"].url == tvd.Food101._URL
    assert DATASETS["flowers102"].url == tvd.Flowers102._download_url_prefix + "102flowers.tgz"
    assert DATASETS["sun397"].url == tvd.SUN397._DATASET_URL and DATASETS["fgvc_aircraft"].url == tvd.FGVCAircraft._URL
    assert DATASETS["oxford_pets"].url == tvd.OxfordIIITPet._RESOURCES[0][0]


# --- digits: unchanged ---------------------------------------------------------------------------


def test_digits_prepares_exactly_as_before(tmp_path):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    # The first release's definition, restated: pixels / 16 as float32, stratified 75/25 with random_state=0.
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target.astype(np.int64), test_size=0.25, stratify=digits.target, random_state=0
    )
    data, meta, out = prepare("digits", tmp_path)
    for key, want in dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test).items():
        assert data[key].dtype == want.dtype
        np.testing.assert_array_equal(data[key], want)
    assert data["classes"].tolist() == [str(c) for c in range(10)]
    assert meta["shapes"]["x_train"] == [1347, 1, 8, 8] and meta["dtype"] == "float32"
    # The .npz written through the registry is the same bytes as prepare_digits alone writes.
    ds.prepare_digits(str(tmp_path / "direct.npz"))
    assert file_sha256(tmp_path / "direct.npz") == meta["sha256"]


def test_digits_rejects_options(tmp_path):
    with pytest.raises(ValueError, match="'digits' takes no options"):
        prepare("digits", tmp_path, {"image_size": 16})


# --- MNIST / Fashion-MNIST: IDX files ------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str, rng) -> dict[str, np.ndarray]:
    """``<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, magic 2051 / 2049, as torchvision reads them."""
    arrays = {}
    for prefix, n in (("train", 30), ("t10k", 10)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n) % 10
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", x, 2051)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", y, 2049)
        arrays[prefix] = (x, y)
    return arrays


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_reads_idx_files(tmp_path, name, folder):
    raw = write_mnist(tmp_path / "raw", folder, np.random.default_rng(0))
    data, meta, out = prepare(name, tmp_path, raw_dir=tmp_path / "raw")
    np.testing.assert_array_equal(data["x_train"], raw["train"][0][:, None])
    np.testing.assert_array_equal(data["y_test"], raw["t10k"][1])
    assert data["x_train"].dtype == np.uint8 and data["y_train"].dtype == np.int64
    if name == "mnist":
        assert data["classes"].tolist() == [str(c) for c in range(10)]
    else:
        assert data["classes"][0] == "T-shirt/top" and data["classes"][9] == "Ankle boot"
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar == meta and sidecar["sha256"] == file_sha256(out)
    assert sidecar["counts"] == {"train": [3] * 10, "test": [1] * 10}
    assert sidecar["shapes"]["x_test"] == [10, 1, 28, 28] and sidecar["dtype"] == "uint8"


def test_mnist_options_subsample_and_channels(tmp_path):
    raw = write_mnist(tmp_path / "raw", "MNIST", np.random.default_rng(1))
    data, meta, _ = prepare("mnist", tmp_path, {"max_per_class_train": 2, "channels": 3}, tmp_path / "raw")
    # First two of each class in file order: labels are i % 10, so the first 20 samples.
    np.testing.assert_array_equal(data["y_train"], raw["train"][1][:20])
    np.testing.assert_array_equal(data["x_train"], np.repeat(raw["train"][0][:20, None], 3, axis=1))
    assert meta["options"] == {"max_per_class_train": 2, "channels": 3} and meta["counts"]["train"] == [2] * 10


def test_download_is_a_no_op_when_files_are_present(tmp_path, monkeypatch):
    write_mnist(tmp_path, "MNIST", np.random.default_rng(0))
    monkeypatch.setattr(ds, "_probe", lambda url, timeout: pytest.fail("probed the network"))
    download_dataset("mnist", str(tmp_path))


# --- CIFAR: pickled batches ----------------------------------------------------------------------


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision checks the md5 of CIFAR's batches and Flowers-102's .mat files; tiny fixtures only need to exist."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.flowers102 as flowers

    exists = lambda path, md5=None: Path(path).is_file()  # noqa: E731
    monkeypatch.setattr(cifar, "check_integrity", exists)
    monkeypatch.setattr(flowers, "check_integrity", exists)


def write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def test_cifar10_reads_pickled_batches(tmp_path, no_md5):
    rng = np.random.default_rng(0)
    base = tmp_path / "raw" / "cifar-10-batches-py"
    batches = []
    for k in range(1, 6):
        x = rng.integers(0, 256, (4, 3072), dtype=np.uint8)  # rows are R, G, B planes of 32×32
        y = [(k + i) % 10 for i in range(4)]
        write_pickle(base / f"data_batch_{k}", {"data": x, "labels": y})
        batches.append((x, y))
    x_test = rng.integers(0, 256, (5, 3072), dtype=np.uint8)
    write_pickle(base / "test_batch", {"data": x_test, "labels": [0, 1, 2, 3, 9]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_pickle(base / "batches.meta", {"label_names": names})
    data, meta, _ = prepare("cifar10", tmp_path, raw_dir=tmp_path / "raw")
    want = np.concatenate([x for x, _ in batches]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(data["x_train"], want)
    np.testing.assert_array_equal(data["y_train"], sum((y for _, y in batches), []))
    np.testing.assert_array_equal(data["x_test"], x_test.reshape(-1, 3, 32, 32))
    assert data["classes"].tolist() == names and meta["shapes"]["x_train"] == [20, 3, 32, 32]


def test_cifar100_reads_fine_labels(tmp_path, no_md5):
    rng = np.random.default_rng(0)
    base = tmp_path / "raw" / "cifar-100-python"
    x = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    write_pickle(base / "train", {"data": x, "fine_labels": [0, 5, 99, 5, 7, 1], "coarse_labels": [0] * 6})
    write_pickle(base / "test", {"data": x[:2], "fine_labels": [99, 0], "coarse_labels": [0, 0]})
    write_pickle(base / "meta", {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []})
    data, _, _ = prepare("cifar100", tmp_path, raw_dir=tmp_path / "raw")
    np.testing.assert_array_equal(data["y_train"], [0, 5, 99, 5, 7, 1])
    np.testing.assert_array_equal(data["x_test"], x[:2].reshape(2, 3, 32, 32))
    assert len(data["classes"]) == 100 and data["classes"][99] == "c99"


def test_cifar_md5_is_checked_in_production(tmp_path):
    """Without the test-only patch, torchvision rejects files whose md5 is not CIFAR's: the path is unchanged."""
    base = tmp_path / "raw" / "cifar-10-batches-py"
    for f in [*(f"data_batch_{k}" for k in range(1, 6)), "test_batch", "batches.meta"]:
        write_pickle(base / f, {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "label_names": ["a"] * 10})
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        prepare("cifar10", tmp_path, raw_dir=tmp_path / "raw")


# --- CIFAR-10.1: two .npy files, test only -------------------------------------------------------


def test_cifar10_1_has_an_empty_train_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    (tmp_path / "raw").mkdir()
    np.save(tmp_path / "raw" / "cifar10.1_v6_data.npy", x)
    np.save(tmp_path / "raw" / "cifar10.1_v6_labels.npy", np.arange(7, dtype=np.int32))
    data, meta, _ = prepare("cifar10_1", tmp_path, raw_dir=tmp_path / "raw")
    assert data["x_train"].shape == (0, 3, 32, 32) and data["y_train"].shape == (0,)
    np.testing.assert_array_equal(data["x_test"], x.transpose(0, 3, 1, 2))
    assert data["y_test"].dtype == np.int64 and data["classes"][0] == "airplane"
    assert meta["counts"]["train"] == [0] * 10 and sum(meta["counts"]["test"]) == 7


# --- CUB-200-2011: folder + txt layout -----------------------------------------------------------


def write_cub(root: Path) -> None:
    base = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    images, labels, split = [], [], []
    image_id = 0
    for c, cls in enumerate(classes):
        for j in range(3):
            image_id += 1
            rel = f"{cls}/{cls.split('.')[1]}_{j:04d}_{image_id}.jpg"
            jpeg(base / "images" / rel, COLOURS[c], size=(30 + 4 * j, 20))
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c + 1}")
            split.append(f"{image_id} {int(j < 2)}")
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))


def test_cub_reads_its_txt_layout(tmp_path, monkeypatch):
    narrow(monkeypatch, "cub200", 3)
    write_cub(tmp_path / "raw")
    data, meta, _ = prepare("cub200", tmp_path, {"image_size": 12}, tmp_path / "raw")
    assert data["x_train"].shape == (6, 3, 12, 12) and data["x_test"].shape == (3, 3, 12, 12)
    np.testing.assert_array_equal(data["y_train"], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(data["y_test"], [0, 1, 2])
    assert data["classes"].tolist() == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    assert_colours(data["x_train"], data["y_train"])
    assert_colours(data["x_test"], data["y_test"])
    assert meta["options"] == {"image_size": 12} and meta["split"] == "official train/test split"


def test_cub_default_size_and_missing_files(tmp_path, monkeypatch):
    narrow(monkeypatch, "cub200", 3)
    write_cub(tmp_path / "raw")
    data, _, _ = prepare("cub200", tmp_path, {"max_per_class_train": 1, "max_per_class_test": 1}, tmp_path / "raw")
    assert data["x_train"].shape == (3, 3, 224, 224)  # the registry's default_image_size
    (tmp_path / "raw" / "CUB_200_2011" / "train_test_split.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train_test_split.txt"):
        prepare("cub200", tmp_path, raw_dir=tmp_path / "raw")


def test_raw_class_count_must_match_the_registry(tmp_path):
    write_cub(tmp_path / "raw")
    with pytest.raises(ValueError, match="has 3 classes, expected 200"):
        prepare("cub200", tmp_path, raw_dir=tmp_path / "raw")


# --- the other torchvision families: each one's own layout ---------------------------------------


def write_dtd(root):
    base = root / "dtd" / "dtd"
    lists = {"train1": [], "val1": [], "test1": []}
    for c, cls in enumerate(["banded", "blotchy"]):
        for j, part in enumerate(["train1", "train1", "val1", "test1", "test1"]):
            jpeg(base / "images" / cls / f"{cls}_{j:04d}.jpg", COLOURS[c])
            lists[part].append(f"{cls}/{cls}_{j:04d}.jpg")
    for part, lines in lists.items():
        (base / "labels").mkdir(parents=True, exist_ok=True)
        (base / "labels" / f"{part}.txt").write_text("\n".join(lines) + "\n")
    return ["banded", "blotchy"], [0, 0, 1, 1, 0, 1], [0, 0, 1, 1]  # train1 then val1; test1


def write_flowers102(root):
    from scipy.io import savemat

    base = root / "flowers-102"
    labels = [1, 2, 1, 2, 1, 2, 3, 3]  # 1-based; image_00001.jpg … image_00008.jpg
    for i, label in enumerate(labels, start=1):
        jpeg(base / "jpg" / f"image_{i:05d}.jpg", COLOURS[label - 1])
    savemat(base / "imagelabels.mat", {"labels": np.array([labels])})
    savemat(base / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[3, 4]]),
                                 "tstid": np.array([[5, 6, 7, 8]])})
    return None, [0, 1, 0, 1], [0, 1, 2, 2]


def write_eurosat(root):
    names = ["AnnualCrop", "Forest"]
    for c, cls in enumerate(names):
        for j in range(5):
            jpeg(root / "eurosat" / "2750" / cls / f"{cls}_{j + 1}.jpg", COLOURS[c], size=(16, 16))
    return names, [0] * 4 + [1] * 4, [0, 1]


def write_food101(root):
    base = root / "food-101"
    meta = {"train": {"apple_pie": [], "baklava": []}, "test": {"apple_pie": [], "baklava": []}}
    for c, cls in enumerate(["apple_pie", "baklava"]):
        for j in range(4):
            split = "train" if j < 3 else "test"
            jpeg(base / "images" / cls / f"{100 + j}.jpg", COLOURS[c])
            meta[split][cls].append(f"{cls}/{100 + j}")
    (base / "meta").mkdir(parents=True)
    for split in meta:
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta[split]))
    return ["apple_pie", "baklava"], [0, 0, 0, 1, 1, 1], [0, 1]


def write_stanford_cars(root):
    from scipy.io import savemat

    base = root / "stanford_cars"
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]

    def annotations(folder, classes):
        ann = np.zeros(len(classes), dtype=[("fname", "O"), ("class", "O")])
        for i, c in enumerate(classes):
            ann[i] = (f"{i + 1:05d}.jpg", c + 1)
            jpeg(base / folder / f"{i + 1:05d}.jpg", COLOURS[c])
        return {"annotations": ann}

    (base / "devkit").mkdir(parents=True)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(names, dtype=object)})
    savemat(base / "devkit" / "cars_train_annos.mat", annotations("cars_train", [1, 0, 1]))
    savemat(base / "cars_test_annos_withlabels.mat", annotations("cars_test", [0, 1]))
    return names, [1, 0, 1], [0, 1]


def write_oxford_pets(root):
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    rows = {"trainval": [], "test": []}
    for c, breed in enumerate(["Abyssinian", "american_bulldog"]):
        for j in range(1, 4):
            jpeg(base / "images" / f"{breed}_{j}.jpg", COLOURS[c])
            rows["trainval" if j < 3 else "test"].append(f"{breed}_{j} {c + 1} {c + 1} 1")
    for split, lines in rows.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return ["Abyssinian", "American Bulldog"], [0, 0, 1, 1], [0, 1]


def write_sun397(root):
    base = root / "SUN397"
    base.mkdir(parents=True)
    (base / "ClassName.txt").write_text("/a/abbey\n/b/bakery/shop\n")
    for c, rel in enumerate(["a/abbey", "b/bakery/shop"]):
        for j in range(5):
            jpeg(base / rel / f"sun_{'zyxwv'[j]}{c}.jpg", COLOURS[c])
    return ["abbey", "bakery/shop"], [0] * 4 + [1] * 4, [0, 1]


CALTECH_COLOURS = [COLOURS[0], (150, 150, 150)]  # class 1 is grey, so its greyscale file has its colour too


def write_caltech101(root):
    base = root / "caltech101" / "101_ObjectCategories"
    for c, cls in enumerate(["BACKGROUND_Google", "Faces", "accordion"]):
        for j in range(1, 6):
            # Caltech-101 mixes greyscale files among the RGB ones; the reader makes every image RGB.
            mode = "L" if cls == "accordion" and j == 2 else "RGB"
            jpeg(base / cls / f"image_{j:04d}.jpg", [(128,) * 3, *CALTECH_COLOURS][c], mode=mode)
    return ["Faces", "accordion"], [0] * 4 + [1] * 4, [0, 1]


def write_fgvc_aircraft(root):
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("707-320\nA300B4\n")
    rows = {"trainval": [], "test": []}
    for c, variant in enumerate(["707-320", "A300B4"]):
        for j in range(3):
            image_id = f"{1000000 + 10 * c + j}"
            jpeg(data / "images" / f"{image_id}.jpg", COLOURS[c])
            rows["trainval" if j < 2 else "test"].append(f"{image_id} {variant}")
    for split, lines in rows.items():
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return ["707-320", "A300B4"], [0, 0, 1, 1], [0, 1]


FAMILIES = {
    "dtd": write_dtd, "flowers102": write_flowers102, "eurosat": write_eurosat, "food101": write_food101,
    "stanford_cars": write_stanford_cars, "oxford_pets": write_oxford_pets, "sun397": write_sun397,
    "caltech101": write_caltech101, "fgvc_aircraft": write_fgvc_aircraft,
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_torchvision_family_reads_its_real_layout(tmp_path, monkeypatch, no_md5, name):
    classes, y_train, y_test = FAMILIES[name](tmp_path / "raw")
    if classes is not None:  # Flowers-102 names all 102 classes itself
        narrow(monkeypatch, name, len(classes))
    data, meta, _ = prepare(name, tmp_path, {"image_size": 8}, tmp_path / "raw")
    np.testing.assert_array_equal(data["y_train"], y_train)
    np.testing.assert_array_equal(data["y_test"], y_test)
    assert data["x_train"].shape == (len(y_train), 3, 8, 8) and data["x_train"].dtype == np.uint8
    if classes is not None:
        assert data["classes"].tolist() == classes
    colours = CALTECH_COLOURS if name == "caltech101" else COLOURS
    assert_colours(data["x_train"], data["y_train"], colours)
    assert_colours(data["x_test"], data["y_test"], colours)
    assert meta["counts"]["train"] == np.bincount(y_train, minlength=len(data["classes"])).tolist()


def test_pooled_families_split_80_20_stratified_and_deterministically(tmp_path, monkeypatch):
    narrow(monkeypatch, "eurosat", 2)
    write_eurosat(tmp_path / "raw")
    a, meta, _ = prepare("eurosat", tmp_path, raw_dir=tmp_path / "raw")
    b, _, _ = prepare("eurosat", tmp_path / "again", raw_dir=tmp_path / "raw")
    assert meta["counts"] == {"train": [4, 4], "test": [1, 1]} and "80/20" in meta["split"]
    assert a["x_train"].shape == (8, 3, 16, 16)  # EuroSAT is fixed-size: no resize by default
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(a[key], b[key])


def test_missing_raw_folder_names_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dtd/dtd/\{images.*npz"):
        prepare("dtd", tmp_path, raw_dir=tmp_path / "nothing")


# --- ImageNet: an ImageFolder root via `path` ----------------------------------------------------


def test_imagenet_reads_an_image_folder_root(tmp_path, monkeypatch):
    narrow(monkeypatch, "imagenet", 2)
    root = tmp_path / "imagenet"
    for c, wnid in enumerate(["n01440764", "n01443537"]):
        for j in range(3):
            jpeg(root / "train" / wnid / f"{wnid}_{j}.JPEG", COLOURS[c], size=(40, 30))
        jpeg(root / "val" / wnid / f"ILSVRC2012_val_{c}.JPEG", COLOURS[c], size=(30, 40))
    data, meta, _ = prepare("imagenet", tmp_path, {"path": str(root), "image_size": 16, "channels": 1})
    assert data["x_train"].shape == (6, 1, 16, 16) and data["x_test"].shape == (2, 1, 16, 16)
    np.testing.assert_array_equal(data["y_train"], [0, 0, 0, 1, 1, 1])
    assert data["classes"].tolist() == ["n01440764", "n01443537"]
    grey = [round(0.299 * r + 0.587 * g + 0.114 * b) for r, g, b in COLOURS]  # PIL's ITU-R 601-2 luma
    assert_colours(data["x_test"], data["y_test"], colours=[(v,) for v in grey])
    assert meta["read_from"] == f"raw folder {root}"


def test_imagenet_without_path_says_how_to_set_it(tmp_path):
    with pytest.raises(RuntimeError, match=r"datasets\.imagenet\.path"):
        download_dataset("imagenet", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="train/<wnid>"):
        prepare("imagenet", tmp_path, raw_dir=tmp_path / "none")


# --- array import --------------------------------------------------------------------------------


def npz(tmp_path, name="a.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def plain_arrays(rng, layout="NHWC"):
    x_train = rng.integers(0, 256, (6, 5, 7, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (4, 5, 7, 3), dtype=np.uint8)
    if layout == "NCHW":
        x_train, x_test = x_train.transpose(0, 3, 1, 2), x_test.transpose(0, 3, 1, 2)
    return dict(x_train=x_train, y_train=np.arange(6) % 2, x_test=x_test, y_test=np.array([1, 0, 1, 0]))


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_import_plain_arrays_in_either_layout(tmp_path, monkeypatch, layout):
    narrow(monkeypatch, "flowers17", 2)
    arrays = plain_arrays(np.random.default_rng(0), layout)
    path = npz(tmp_path, **arrays, classes=np.array(["rose", "tulip"]))
    data, meta, _ = prepare("flowers17", tmp_path, {"npz": path})
    want = arrays["x_train"] if layout == "NCHW" else arrays["x_train"].transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(data["x_train"], want)
    np.testing.assert_array_equal(data["y_test"], [1, 0, 1, 0])
    assert data["y_train"].dtype == np.int64 and data["classes"].tolist() == ["rose", "tulip"]
    assert meta["read_from"] == f"array file {path}" and meta["options"] == {"npz": path}


def test_import_grey_and_float_images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 6, 6), dtype=np.uint8)
    y = np.arange(10)
    path = npz(tmp_path, x_train=x.astype(np.float32) / 255, y_train=y, x_test=x[:3], y_test=y[:3])
    data, _, _ = prepare("mnist", tmp_path, {"npz": path})
    np.testing.assert_array_equal(data["x_train"], x[:, None])  # float ×255, rounded back exactly
    np.testing.assert_array_equal(data["x_test"], x[:3, None])
    assert data["classes"].tolist() == [str(c) for c in range(10)]  # default names: the registered count


def test_import_jpeg_bytes(tmp_path):
    import io

    from PIL import Image

    def encode(labels):
        blobs = []
        for label in labels:
            buf = io.BytesIO()
            Image.new("RGB", (32, 32), COLOURS[label]).save(buf, format="JPEG", quality=95)
            blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
        return np.concatenate(blobs), offsets

    y_train, y_test = np.array([0, 1, 2, 3, 0, 1]), np.array([3, 2])
    (xtr, otr), (xte, ote) = encode(y_train), encode(y_test)
    path = npz(tmp_path, x_train_jpeg=xtr, x_train_offsets=otr, y_train=y_train, x_test_jpeg=xte,
               x_test_offsets=ote, y_test=y_test, classes=np.array([f"c{i}" for i in range(10)]))
    data, _, _ = prepare("cifar10", tmp_path, {"npz": path, "max_per_class_train": 1})
    np.testing.assert_array_equal(data["y_train"], [0, 1, 2, 3])  # subsampled before decoding
    assert data["x_train"].shape == (4, 3, 32, 32)
    assert_colours(data["x_train"], data["y_train"], tol=4)
    assert_colours(data["x_test"], data["y_test"], tol=4)


def test_image_size_resizes_short_side_then_crops_the_centre(tmp_path, monkeypatch):
    narrow(monkeypatch, "flowers17", 1)
    x = np.zeros((1, 20, 40, 3), np.uint8)  # H=20, W=40: red 0..7 | green 8..31 | blue 32..39
    x[:, :, :8, 0] = x[:, :, 8:32, 1] = x[:, :, 32:, 2] = 255
    path = npz(tmp_path, x_train=x, y_train=np.array([0]), x_test=x, y_test=np.array([0]))
    data, meta, _ = prepare("flowers17", tmp_path, {"npz": path, "image_size": 10})
    # 20×40 → 10×20; the centre 10 columns come from source columns 10..29, and the antialiasing
    # filter (±2 source pixels at this scale) reaches 8..31 at most: all green. A left or plain crop is not.
    assert data["x_train"].shape == (1, 3, 10, 10)
    np.testing.assert_array_equal(data["x_train"][0, 1], 255)
    np.testing.assert_array_equal(data["x_train"][0, [0, 2]], 0)
    assert meta["shapes"]["x_test"] == [1, 3, 10, 10]


def test_import_rgb_to_grey(tmp_path, monkeypatch):
    narrow(monkeypatch, "flowers17", 4)
    x = np.stack([np.full((4, 4, 3), c, np.uint8) for c in COLOURS])
    path = npz(tmp_path, x_train=x, y_train=np.arange(4), x_test=x, y_test=np.arange(4))
    data, _, _ = prepare("flowers17", tmp_path, {"npz": path, "channels": 1})
    grey = [round(0.299 * r + 0.587 * g + 0.114 * b) for r, g, b in COLOURS]
    np.testing.assert_allclose(data["x_train"][:, 0, 0, 0], grey, atol=1)


def _bad(rng):
    good = plain_arrays(rng)
    return {
        "missing y_test": ({k: v for k, v in good.items() if k != "y_test"}, r"lacks y_test"),
        "missing x_train": ({k: v for k, v in good.items() if k != "x_train"}, r"lacks x_train"),
        "count mismatch": ({**good, "y_train": good["y_train"][:5]}, r"x_train has 6 images but y_train has 5"),
        "labels out of range": ({**good, "y_test": np.array([0, 1, 2, 0])}, r"y_test must hold labels 0\.\.1"),
        "negative labels": ({**good, "y_train": np.arange(6) - 1}, r"y_train must hold labels 0\.\.1"),
        "float labels": ({**good, "y_train": good["y_train"].astype(float)}, r"y_train must be 1-D integer labels"),
        "int64 images": ({**good, "x_test": good["x_test"].astype(np.int64)}, r"x_test: images must be uint8"),
        "float out of [0, 1]": ({**good, "x_train": good["x_train"].astype(np.float32)}, r"x_train: float images"),
        "2-D images": ({**good, "x_train": good["x_train"].reshape(6, -1)}, r"x_train: images must have 3"),
        "no channel axis": ({**good, "x_test": np.zeros((4, 5, 7, 5), np.uint8)}, r"x_test: shape \(4, 5, 7, 5\)"),
        "ambiguous layout": ({**good, "x_test": np.zeros((4, 3, 7, 1), np.uint8)}, r"x_test: layout"),
        "train/test shapes differ": ({**good, "x_test": good["x_test"][:, :4]}, r"train images are \(3, 5, 7\)"),
        "classes not strings": ({**good, "classes": np.arange(2)}, r"classes must be a 1-D string array"),
        "classes vs registry": ({**good, "classes": np.array(["a", "b", "c"])},
                                r"has 3 classes but dataset 'flowers17' has 2"),
    }


@pytest.mark.parametrize("case", sorted(_bad(np.random.default_rng(0))))
def test_import_errors_name_the_file_and_the_array(tmp_path, monkeypatch, case):
    narrow(monkeypatch, "flowers17", 2)
    arrays, message = _bad(np.random.default_rng(0))[case]
    path = npz(tmp_path, "bad_file.npz", **arrays)
    with pytest.raises(ArrayFileError, match=message) as err:
        prepare("flowers17", tmp_path, {"npz": path})
    assert "bad_file.npz" in str(err.value)


def test_import_jpeg_offsets_are_checked(tmp_path):
    y = np.array([0, 1])
    path = npz(tmp_path, "bad_offsets.npz", x_train_jpeg=np.zeros(10, np.uint8), x_train_offsets=np.array([0, 4, 9]),
               y_train=y, x_test_jpeg=np.zeros(10, np.uint8), y_test=y)
    with pytest.raises(ArrayFileError, match=r"x_train_offsets must rise from 0 to len\(x_train_jpeg\) = 10"):
        prepare("cifar10", tmp_path, {"npz": path})
    path = npz(tmp_path, "no_offsets.npz", x_train_jpeg=np.zeros(10, np.uint8), x_train_offsets=np.array([0, 4, 10]),
               y_train=y, x_test_jpeg=np.zeros(10, np.uint8), y_test=y)
    with pytest.raises(ArrayFileError, match=r"no_offsets\.npz.*no x_test_offsets"):
        prepare("cifar10", tmp_path, {"npz": path})


def test_unregistered_name_imports_with_n_classes(tmp_path):
    arrays = plain_arrays(np.random.default_rng(0))
    path = npz(tmp_path, **arrays)
    data, meta, _ = prepare("my_set", tmp_path, {"npz": path, "n_classes": 3})
    assert data["classes"].tolist() == ["0", "1", "2"] and meta["counts"]["train"] == [3, 3, 0]
    assert meta["family"] == "arrays" and meta["name"] == "my_set"
    with pytest.raises(KeyError, match=r"unknown dataset 'my_set'.*npz: path/to/file.npz, n_classes: K"):
        prepare("my_set", tmp_path, {"npz": path})
    with pytest.raises(ValueError, match="datasets.mnist.n_classes = 3, but 'mnist' has 10"):
        prepare("mnist", tmp_path, {"npz": path, "n_classes": 3})


def test_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['imagesize'\].*valid: npz, path"):
        prepare("mnist", tmp_path, {"imagesize": 32}, tmp_path)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        prepare("mnist", tmp_path, {"channels": 2}, tmp_path)
    with pytest.raises(ValueError, match="max_per_class_test must be a positive integer"):
        prepare("mnist", tmp_path, {"max_per_class_test": 0}, tmp_path)
    with pytest.raises(ValueError, match="either npz .* or path"):
        prepare("mnist", tmp_path, {"npz": "a.npz", "path": "b"}, None)
    with pytest.raises(ValueError, match="only array import.*oxford_flowers17_64.npz"):
        prepare("flowers17", tmp_path, {}, tmp_path)


# --- download: fails fast offline, one message -----------------------------------------------------


def test_offline_download_fails_fast_with_one_actionable_message(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "_probe", lambda url, timeout: "monkeypatched: no network")
    raw = tmp_path / "resources" / "mnist"
    start = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        download_dataset("mnist", str(raw))
    assert time.monotonic() - start < 15
    message = str(err.value)
    for part in ("'mnist'", DATASETS["mnist"].url, str(raw), "MNIST/raw/", "npz", "datasets: {mnist: {npz:"):
        assert part in message
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)


def test_real_probe_fails_fast_without_network(tmp_path):
    if ds._probe(DATASETS["cifar10"].url, 3.0) is None:
        pytest.skip("the network is reachable here; this test is about its absence")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"cannot download dataset 'cifar10' from https://www\.cs\.toronto\.edu"):
        download_dataset("cifar10", str(tmp_path / "raw"))
    assert time.monotonic() - start < 15


def test_download_errors_become_the_same_message_and_the_timeout_is_restored(tmp_path, monkeypatch):
    seen = []

    def fake_download(root):
        seen.append(socket.getdefaulttimeout())
        raise OSError("connection reset")

    monkeypatch.setattr(ds, "_probe", lambda url, timeout: None)
    monkeypatch.setitem(DATASETS, "cub200", dataclasses.replace(DATASETS["cub200"], download_fn=fake_download))
    before = socket.getdefaulttimeout()
    with pytest.raises(RuntimeError, match=r"cub200.*OSError: connection reset(.|\n)*CUB_200_2011/\{images\.txt"):
        download_dataset("cub200", str(tmp_path), timeout=3.0)
    assert seen == [3.0] and socket.getdefaulttimeout() == before


@pytest.mark.parametrize("name,why", [("stanford_cars", "original URL is gone"), ("flowers17", "only array import")])
def test_datasets_without_download_say_so(tmp_path, monkeypatch, name, why):
    monkeypatch.setattr(ds, "_probe", lambda url, timeout: pytest.fail("probed the network"))
    with pytest.raises(RuntimeError, match=why) as err:
        download_dataset(name, str(tmp_path))
    assert "npz" in str(err.value)


def test_cub_download_uses_the_official_archive_and_md5(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    calls = []
    monkeypatch.setattr(ds, "_probe", lambda url, timeout: None)
    monkeypatch.setattr(tvu, "download_and_extract_archive", lambda url, **kw: calls.append((url, kw)))
    with pytest.raises(RuntimeError, match="files are not where expected"):
        download_dataset("cub200", str(tmp_path))
    assert calls == [("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
                      {"download_root": str(tmp_path), "filename": "CUB_200_2011.tgz",
                       "md5": "97eceeb196236b17998738112f37df78"})]


# --- the real offline copies in /work/shared/data (skipped where absent) ---------------------------


def test_shared_mnist_import(tmp_path, shared_data):
    data, meta, _ = prepare("mnist", tmp_path, {"npz": str(shared_data / "mnist.npz")})
    assert data["x_train"].shape == (60000, 1, 28, 28) and data["x_test"].shape == (10000, 1, 28, 28)
    # Class counts of official MNIST, as listed in /work/shared/data/README.md.
    assert meta["counts"]["train"] == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert meta["counts"]["test"] == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(data["x_train"].mean() - 33.318) < 0.01  # README: train pixel mean 0.1307 × 255


def test_shared_flowers17_import(tmp_path, shared_data):
    data, meta, _ = prepare("flowers17", tmp_path, {"npz": str(shared_data / "oxford_flowers17_64.npz")})
    assert data["x_train"].shape == (1088, 3, 64, 64) and data["x_test"].shape == (272, 3, 64, 64)
    assert meta["n_classes"] == 17 and meta["counts"]["train"] == [64] * 17 and meta["counts"]["test"] == [16] * 17
    assert data["classes"][0] == "Daffodil" and data["classes"][16] == "Pansy"


def test_shared_cifar10_jpeg_slice_matches_the_decoded_subset(tmp_path, shared_data):
    options = {"npz": str(shared_data / "cifar10_jpeg.npz"), "max_per_class_train": 20, "max_per_class_test": 5}
    data, meta, _ = prepare("cifar10", tmp_path, options)
    assert meta["counts"] == {"train": [20] * 10, "test": [5] * 10}
    # README: decoding the JPEG bytes with this Pillow reproduces cifar10_small.npz (first 500/200 per class).
    small = np.load(shared_data / "cifar10_small.npz")
    keep = np.sort(np.concatenate([np.flatnonzero(small["y_train"] == c)[:20] for c in range(10)]))
    np.testing.assert_array_equal(data["x_train"], small["x_train"][keep].transpose(0, 3, 1, 2))


@pytest.mark.slow
def test_shared_cifar10_jpeg_full_import(tmp_path, shared_data):
    data, meta, _ = prepare("cifar10", tmp_path, {"npz": str(shared_data / "cifar10_jpeg.npz")})
    assert data["x_train"].shape == (50000, 3, 32, 32) and data["x_test"].shape == (10000, 3, 32, 32)
    assert meta["counts"] == {"train": [5000] * 10, "test": [1000] * 10}
    means = data["x_train"].mean(axis=(0, 2, 3))
    np.testing.assert_allclose(means, [125.27, 122.93, 113.86], atol=0.01)  # README's decoded channel means
