"""The dataset registry: each name's facts (classes, shape, source, split, raw layout) and the callables that fetch
and read its raw files (torchvision's and CUB's imported only when called)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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
