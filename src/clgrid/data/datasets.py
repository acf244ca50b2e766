"""Dataset registry: a name maps to how its raw files are downloaded and how they become one ``.npz``.

A prepared file has ``x_train, y_train, x_test, y_test`` (images N×C×H×W uint8,
labels int64) and ``classes`` (names in label order); ``digits`` alone keeps its
historical float32 pixels in [0, 1]. A sidecar JSON beside it (``mnist.npz`` →
``mnist.json``) records the source, the file's sha256, shapes, per-class counts
and the options used. Jobs read the ``.npz`` with numpy, so a training job never
imports the library that made the data.

Options (``prepare_dataset(name, out, options, raw_dir)``; absent or None = default):

- ``npz``: import this array file instead of the raw files (see ``clgrid.data.arrays``); ``raw_dir`` is unused.
- ``path``: read the raw files from this folder instead of ``raw_dir``, in the same layout; ImageNet needs it
  (an ImageFolder root with ``train/<wnid>/`` and ``val/<wnid>/``).
- ``image_size``: side of the square images written: short side resized (bilinear), then centre crop.
  Defaults to the dataset's ``default_image_size``; fixed-size datasets keep their size unless it is set.
- ``channels``: 1 or 3; grey is replicated to RGB, RGB becomes grey by PIL's ITU-R 601-2 luma.
  Defaults to the source's (1 for MNIST-like, 3 otherwise).
- ``max_per_class_train`` / ``max_per_class_test``: keep the first N samples of each class, in file order.
- ``n_classes``: for a name that is not registered, imported with ``npz``: its class count (a registered
  name's count is fixed; giving a different one is an error).
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import numpy as np

from clgrid.io import file_sha256, save_npz, write_json

ARRAYS = ("x_train", "y_train", "x_test", "y_test", "classes")
OPTIONS = ("npz", "path", "image_size", "channels", "max_per_class_train", "max_per_class_test", "n_classes")
FAMILIES = ("sklearn", "torchvision", "archive", "folder", "arrays")
SHARED_SPLIT = "no official test split: stratified 80/20 (sklearn train_test_split, random_state=0)"


@dataclass(frozen=True)
class DatasetInfo:
    """What the DAG must know about a dataset before it is prepared, and how to get and read it."""

    name: str
    n_classes: int  # known before preparation; config checks use it
    input_shape: tuple[int, ...] | None  # C,H,W at default options; None where image_size sets it
    source: str  # paper and origin
    url: str  # main download URL ('' when nothing is downloaded)
    family: str  # one of FAMILIES
    default_image_size: int | None  # variable-size images are resized to this at prepare time
    split: str = "official train/test split"
    layout: str = ""  # what the reader expects under raw_dir, for error messages
    download_fn: Callable[[str], None] | None = None  # fetch into raw_dir (None: cannot be downloaded)
    present_fn: Callable[[str], bool] | None = None  # raw files already under raw_dir?
    read_fn: Callable[[str], tuple[Any, Any, list[str]]] | None = None  # raw_dir → (train, test, classes)
    no_download: str = ""  # why there is no download and what to do instead
    n_train: int | None = None  # training samples at default options (config checks; None: not known in advance)


# --- digits: unchanged since the first release, so its arrays stay byte-for-byte the same ----------


def prepare_digits(out_path: str) -> None:
    """scikit-learn's 8×8 digits (ships with the package, no download): stratified 75/25 split, pixels / 16."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    # The split seed belongs to the dataset's definition, not to any experiment seed.
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=0
    )
    save_npz(
        out_path,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=np.array([str(c) for c in range(10)]),
    )


# --- registry ------------------------------------------------------------------------------------


def _tv(name: str) -> dict[str, Any]:
    """The callables of a torchvision-backed dataset (imported lazily: torchvision is heavy)."""

    def download_fn(root: str) -> None:
        from clgrid.data import torchvision_sets

        torchvision_sets.download(name, root)

    def present_fn(root: str) -> bool:
        from clgrid.data import torchvision_sets

        return torchvision_sets.present(name, root)

    def read_fn(root: str):
        from clgrid.data import torchvision_sets

        return torchvision_sets.read(name, root)

    return {"family": "torchvision", "download_fn": download_fn, "present_fn": present_fn, "read_fn": read_fn}


def _cub() -> dict[str, Any]:
    def download_fn(root: str) -> None:
        from clgrid.data import cub

        cub.download(root)

    def present_fn(root: str) -> bool:
        from clgrid.data import cub

        return cub.present(root)

    def read_fn(root: str):
        from clgrid.data import cub

        return cub.read(root)

    return {"family": "archive", "download_fn": download_fn, "present_fn": present_fn, "read_fn": read_fn}


def _cifar10_1() -> dict[str, Any]:
    from clgrid.data import arrays

    return {"family": "arrays", "download_fn": arrays.download_cifar10_1, "present_fn": arrays.cifar10_1_present,
            "read_fn": arrays.read_cifar10_1}


def _image_folder(root: str):
    from clgrid.data.torchvision_sets import read_image_folder

    return read_image_folder(root)


_MNIST_FILES = "{train,t10k}-{images-idx3,labels-idx1}-ubyte (the four .gz files, unpacked)"
_VGG = "https://www.robots.ox.ac.uk/~vgg/data/"

_ENTRIES = [
    DatasetInfo("digits", 10, (1, 8, 8), "sklearn.datasets.load_digits (UCI optical digits test set, 1797 images)",
                "", "sklearn", None, split="stratified 75/25 (sklearn train_test_split, random_state=0)", n_train=1347),
    DatasetInfo("mnist", 10, (1, 28, 28), "LeCun et al. 1998, Gradient-based learning applied to document "
                "recognition (Proc. IEEE); read with torchvision.datasets.MNIST",
                "https://ossci-datasets.s3.amazonaws.com/mnist/", default_image_size=None,
                layout=f"MNIST/raw/{_MNIST_FILES}", n_train=60000, **_tv("mnist")),
    DatasetInfo("fashion_mnist", 10, (1, 28, 28), "Xiao et al. 2017, Fashion-MNIST (arXiv:1708.07747); "
                "read with torchvision.datasets.FashionMNIST",
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", default_image_size=None,
                layout=f"FashionMNIST/raw/{_MNIST_FILES}", n_train=60000, **_tv("fashion_mnist")),
    DatasetInfo("cifar10", 10, (3, 32, 32), "Krizhevsky 2009, Learning Multiple Layers of Features from Tiny "
                "Images; read with torchvision.datasets.CIFAR10",
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", default_image_size=None,
                layout="cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} (cifar-10-python.tar.gz "
                "unpacked; torchvision checks their md5s)", n_train=50000, **_tv("cifar10")),
    DatasetInfo("cifar100", 100, (3, 32, 32), "Krizhevsky 2009, Learning Multiple Layers of Features from Tiny "
                "Images (100 fine labels); read with torchvision.datasets.CIFAR100",
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", default_image_size=None,
                layout="cifar-100-python/{train, test, meta} (cifar-100-python.tar.gz unpacked; torchvision "
                "checks their md5s)", n_train=50000, **_tv("cifar100")),
    DatasetInfo("cifar10_1", 10, (3, 32, 32), "Recht et al. 2018, Do CIFAR-10 Classifiers Generalize to CIFAR-10? "
                "(arXiv:1806.00451), CIFAR-10.1 v6: a shifted test set of 2000 images",
                "https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/cifar10.1_v6_data.npy",
                default_image_size=None, split="test split only (2000 images); the train arrays are empty",
                layout="cifar10.1_v6_data.npy and cifar10.1_v6_labels.npy directly in it", **_cifar10_1()),
    DatasetInfo("cub200", 200, None, "Wah et al. 2011, The Caltech-UCSD Birds-200-2011 Dataset (CNS-TR-2011-001)",
                "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz", default_image_size=224,
                layout="CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, "
                "images/<class>/<file>.jpg} (CUB_200_2011.tgz unpacked)", **_cub()),
    DatasetInfo("dtd", 47, None, "Cimpoi et al. 2014, Describing Textures in the Wild (CVPR); "
                "torchvision.datasets.DTD", _VGG + "dtd/download/dtd-r1.0.1.tar.gz", default_image_size=224,
                split="official partition 1: train+val / test",
                layout="dtd/dtd/{images/<class>/*.jpg, labels/{train1,val1,test1}.txt} (dtd-r1.0.1.tar.gz "
                "unpacked into dtd/)", **_tv("dtd")),
    DatasetInfo("flowers102", 102, None, "Nilsback & Zisserman 2008, Automated Flower Classification over a Large "
                "Number of Classes (ICVGIP); torchvision.datasets.Flowers102", _VGG + "flowers/102/102flowers.tgz",
                default_image_size=224, split="official: train+val (2040) / test (6149)",
                layout="flowers-102/{jpg/image_NNNNN.jpg, imagelabels.mat, setid.mat} (102flowers.tgz unpacked "
                "into flowers-102/; torchvision checks the .mat md5s)", n_train=2040, **_tv("flowers102")),
    DatasetInfo("eurosat", 10, (3, 64, 64), "Helber et al. 2019, EuroSAT (IEEE JSTARS), RGB version; "
                "torchvision.datasets.EuroSAT",
                "https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/"
                "EuroSAT.zip", default_image_size=None, split=SHARED_SPLIT,
                layout="eurosat/2750/<class>/*.jpg (EuroSAT.zip unzipped into eurosat/)", **_tv("eurosat")),
    DatasetInfo("food101", 101, None, "Bossard et al. 2014, Food-101: Mining Discriminative Components with Random "
                "Forests (ECCV); torchvision.datasets.Food101", "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
                default_image_size=64, layout="food-101/{images/<class>/<id>.jpg, meta/train.json, meta/test.json}",
                **_tv("food101")),
    DatasetInfo("stanford_cars", 196, None, "Krause et al. 2013, 3D Object Representations for Fine-Grained "
                "Categorization (ICCV 3dRR); torchvision.datasets.StanfordCars",
                "https://ai.stanford.edu/~jkrause/cars/car_dataset.html", default_image_size=224,
                layout="stanford_cars/{cars_train/, cars_test/, devkit/cars_meta.mat, devkit/cars_train_annos.mat, "
                "cars_test_annos_withlabels.mat}", no_download="its original URL is gone and torchvision no longer "
                "downloads it", **_tv("stanford_cars")),
    DatasetInfo("oxford_pets", 37, None, "Parkhi et al. 2012, Cats and Dogs (CVPR); "
                "torchvision.datasets.OxfordIIITPet", _VGG + "pets/data/images.tar.gz", default_image_size=224,
                split="official: trainval / test",
                layout="oxford-iiit-pet/{images/<Breed>_<n>.jpg, annotations/trainval.txt, annotations/test.txt} "
                "(images.tar.gz and annotations.tar.gz unpacked)", **_tv("oxford_pets")),
    DatasetInfo("sun397", 397, None, "Xiao et al. 2010, SUN Database: Large-scale Scene Recognition from Abbey to "
                "Zoo (CVPR); torchvision.datasets.SUN397",
                "http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
                default_image_size=64, split=SHARED_SPLIT,
                layout="SUN397/{ClassName.txt, <letter>/<class>/sun_*.jpg} (SUN397.tar.gz unpacked)",
                **_tv("sun397")),
    DatasetInfo("caltech101", 101, None, "Fei-Fei et al. 2004, Learning Generative Visual Models from Few Training "
                "Examples (CVPR workshop); torchvision.datasets.Caltech101 (BACKGROUND_Google dropped)",
                "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip", default_image_size=224,
                split=SHARED_SPLIT, layout="caltech101/101_ObjectCategories/<class>/image_NNNN.jpg, "
                "BACKGROUND_Google/ included", **_tv("caltech101")),
    DatasetInfo("fgvc_aircraft", 100, None, "Maji et al. 2013, Fine-Grained Visual Classification of Aircraft "
                "(arXiv:1306.5151), 100 variants; torchvision.datasets.FGVCAircraft",
                _VGG + "fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz", default_image_size=224,
                split="official: trainval / test",
                layout="fgvc-aircraft-2013b/data/{images/<id>.jpg, variants.txt, images_variant_trainval.txt, "
                "images_variant_test.txt}", **_tv("fgvc_aircraft")),
    DatasetInfo("imagenet", 1000, None, "Russakovsky et al. 2015, ImageNet Large Scale Visual Recognition Challenge "
                "(IJCV), ILSVRC-2012; read as an ImageFolder root", "", "folder", default_image_size=64,
                split="official: train / val (val serves as test)",
                layout="train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (val sorted into class folders)",
                read_fn=_image_folder,
                no_download="ImageNet has no public download; set datasets.imagenet.path to an ImageFolder root "
                "with train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"),
    DatasetInfo("flowers17", 17, (3, 64, 64), "Nilsback & Zisserman 2006, A Visual Vocabulary for Flower "
                "Classification (CVPR); 80 images per class", _VGG + "flowers/17/17flowers.tgz", "arrays", None,
                split="given by the imported file (oxford_flowers17_64.npz: 64/16 per class, not datasplits.mat)",
                no_download="only array import is supported: set datasets.flowers17.npz to an array file such as "
                "oxford_flowers17_64.npz (x_train, y_train, x_test, y_test, classes)"),
]
DATASETS: dict[str, DatasetInfo] = {info.name: info for info in _ENTRIES}


def get_dataset(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset '{name}'; valid: {', '.join(sorted(DATASETS))}") from None


# --- download ------------------------------------------------------------------------------------


def _probe(url: str, timeout: float) -> str | None:
    """None when ``url``'s host accepts a TCP connection within ``timeout`` s, else why not.

    Runs in a thread because name resolution ignores socket timeouts.
    """
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
            result.append(None)
        except OSError as err:
            result.append(f"{type(err).__name__}: {err}")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else f"no answer from {parsed.hostname}:{port} within {timeout:g} s"


def _download_failed(info: DatasetInfo, raw_dir: str, reason: str) -> RuntimeError:
    by_hand = f"Place the files by hand under '{raw_dir}' as {info.layout}, then rerun.\n" if info.read_fn else ""
    return RuntimeError(
        f"cannot download dataset '{info.name}' from {info.url or '(no URL)'}: {reason}.\n"
        f"{by_hand}"
        f"Or import arrays instead: set `datasets: {{{info.name}: {{npz: path/to/file.npz}}}}` in the config "
        "(an .npz with x_train, y_train, x_test, y_test and optionally classes)."
    )


def download_dataset(name: str, raw_dir: str, timeout: float = 10.0) -> None:
    """Fetch a dataset's raw files into ``raw_dir``; offline it fails within ``timeout`` s, saying what goes where."""
    info = get_dataset(name)
    if info.family == "sklearn":
        return  # ships with scikit-learn
    if info.present_fn is not None and info.present_fn(raw_dir):
        return
    if info.download_fn is None or info.no_download:
        raise _download_failed(info, raw_dir, info.no_download or "no download is known")
    unreachable = _probe(info.url, timeout)
    if unreachable:
        raise _download_failed(info, raw_dir, f"host unreachable ({unreachable})")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # torchvision's urlopen calls take no timeout of their own
    try:
        Path(raw_dir).mkdir(parents=True, exist_ok=True)
        info.download_fn(raw_dir)
    except Exception as err:  # noqa: BLE001 - any failure gets the same advice
        raise _download_failed(info, raw_dir, f"{type(err).__name__}: {err}") from None
    finally:
        socket.setdefaulttimeout(previous)
    if info.present_fn is not None and not info.present_fn(raw_dir):
        raise _download_failed(info, raw_dir, "the download finished but the files are not where expected")


# --- prepare -------------------------------------------------------------------------------------


def _check_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for dataset '{name}'; valid: {', '.join(OPTIONS)}")
    for key in ("image_size", "max_per_class_train", "max_per_class_test", "n_classes"):
        if key in opts and (isinstance(opts[key], bool) or not isinstance(opts[key], int) or opts[key] < 1):
            raise ValueError(f"datasets.{name}.{key} must be a positive integer, got {opts[key]!r}")
    if "channels" in opts and opts["channels"] not in (1, 3):
        raise ValueError(f"datasets.{name}.channels must be 1 or 3, got {opts['channels']!r}")
    if "npz" in opts and "path" in opts:
        raise ValueError(f"datasets.{name}: set either npz (array import) or path (raw folder), not both")
    if name == "digits" and opts:
        raise ValueError(f"dataset 'digits' takes no options (got {sorted(opts)}); it is fixed by scikit-learn")
    return {k: str(v) if isinstance(v, os.PathLike) else v for k, v in opts.items()}


def _read(info: DatasetInfo, opts: dict[str, Any], raw_dir: str | None):
    if "npz" in opts:
        from clgrid.data.arrays import read_npz

        return read_npz(opts["npz"], n_classes=info.n_classes, name=info.name), f"array file {opts['npz']}"
    root = opts.get("path") or raw_dir
    if info.read_fn is None or root is None:
        hint = info.no_download or f"set datasets.{info.name}.path to its raw folder ({info.layout})"
        raise ValueError(f"dataset '{info.name}' has nothing to read: {hint}")
    try:
        train, test, classes = info.read_fn(root)
    except (RuntimeError, FileNotFoundError) as err:
        raise FileNotFoundError(
            f"dataset '{info.name}': raw files not found or incomplete under '{root}' ({err}); expected "
            f"{info.layout}. Run the download rule, place them there by hand (or set datasets.{info.name}.path to "
            f"a folder holding them), or import arrays with "
            f"`datasets: {{{info.name}: {{npz: path/to/file.npz}}}}`"
        ) from err
    if len(classes) != info.n_classes:
        raise ValueError(
            f"dataset '{info.name}' under '{root}' has {len(classes)} classes, expected {info.n_classes}; "
            "the raw folder is incomplete or holds another dataset"
        )
    return (train, test, classes), f"raw folder {root}"


def _info_for(name: str, opts: dict[str, Any]) -> DatasetInfo:
    """The registry entry, or for an unregistered name imported with npz and n_classes, one made for it."""
    if name in DATASETS:
        info = DATASETS[name]
        if opts.get("n_classes", info.n_classes) != info.n_classes:
            raise ValueError(f"datasets.{name}.n_classes = {opts['n_classes']}, but '{name}' has {info.n_classes} "
                             "classes; leave n_classes out for a registered dataset")
        return info
    if "npz" not in opts or "n_classes" not in opts:
        raise KeyError(f"unknown dataset '{name}'; valid: {', '.join(sorted(DATASETS))}, or import your own arrays "
                       f"with datasets: {{{name}: {{npz: path/to/file.npz, n_classes: K}}}}")
    return DatasetInfo(name, int(opts["n_classes"]), None, f"imported arrays {opts['npz']}", "", "arrays", None,
                       split="as in the imported file")


def prepare_dataset(name: str, out: str, options: dict[str, Any] | None = None,
                    raw_dir: str | None = None) -> dict[str, Any]:
    """Write ``out`` (one ``.npz``) and its sidecar ``.json`` from raw files or an array file; return the metadata."""
    from clgrid.data.arrays import finish_split
    from clgrid.io import load_npz

    opts = _check_options(name, options)
    info = _info_for(name, opts)
    if name == "digits":
        prepare_digits(out)
        arrays, origin = load_npz(out, ARRAYS), "scikit-learn"
    else:
        (train, test, classes), origin = _read(info, opts, raw_dir)
        size = opts.get("image_size") or info.default_image_size
        channels = opts.get("channels") or (train.channels if len(train) else test.channels)
        x_train, y_train = finish_split(train, opts.get("max_per_class_train"), size, channels)
        x_test, y_test = finish_split(test, opts.get("max_per_class_test"), size, channels)
        arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
                  "classes": np.array(classes)}
        save_npz(out, **arrays)
    return _write_sidecar(info, out, arrays, opts, origin)


def sidecar_path(out: str | os.PathLike) -> Path:
    """Where the metadata of a prepared file goes: ``results/data/mnist.npz`` → ``results/data/mnist.json``."""
    return Path(out).with_suffix(".json")


def _write_sidecar(info: DatasetInfo, out: str, arrays: dict[str, np.ndarray], opts: dict[str, Any],
                   origin: str) -> dict[str, Any]:
    n_classes = len(arrays["classes"])
    meta = {
        "name": info.name,
        "source": info.source,
        "url": info.url,
        "family": info.family,
        "read_from": origin,
        "split": "as in the imported file" if "npz" in opts else info.split,
        "file": Path(out).name,
        "sha256": file_sha256(out),
        "shapes": {k: list(arrays[k].shape) for k in ARRAYS},
        "dtype": str(arrays["x_train"].dtype),
        "n_classes": n_classes,
        "classes": [str(c) for c in arrays["classes"]],
        "counts": {
            split: np.bincount(arrays[f"y_{split}"], minlength=n_classes).tolist() for split in ("train", "test")
        },
        "options": opts,
    }
    write_json(sidecar_path(out), meta)
    return meta
