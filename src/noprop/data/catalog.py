"""The datasets noprop knows by name: their files, official checksums, download locations, statistics.

Every file is the original distribution file, byte for byte; its md5 is the one the publishers
(and torchvision) give. A dataset can be on disk in more than one *layout* (CIFAR: the
``.tar.gz`` archive, or the folder it extracts to); a layout is usable when all its files are there.
Only layouts whose files carry URLs can be downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

#: MNIST's own host (yann.lecun.com) is often down; like torchvision we try the PyTorch CI mirror
#: first, then the CVDF mirror that TensorFlow Datasets uses, then the original host.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
#: Zalando's S3 bucket (used by torchvision and TFDS), then the files in Zalando's GitHub repository.
FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
CIFAR_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)


@dataclass(frozen=True)
class DataFile:
    """One original file: path relative to the dataset folder, official md5, byte size if known."""

    path: str
    md5: str
    size: int | None = None
    mirrors: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(m + self.name for m in self.mirrors)


@dataclass(frozen=True)
class FileLayout:
    """A complete set of files from which the dataset can be read."""

    kind: str  # "idx", "cifar-archive", "cifar-folder", "cifar-binary-archive", "cifar-binary-folder"
    files: tuple[DataFile, ...]

    @property
    def downloadable(self) -> bool:
        return all(f.mirrors for f in self.files)

    @property
    def size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if None in sizes else sum(s for s in sizes if s is not None)


@dataclass(frozen=True)
class DatasetInfo:
    """A named dataset: where its files live (``folder`` under a data root) and how to read them."""

    name: str
    folder: str
    num_classes: int
    #: Per-channel mean and standard deviation of the training pixels scaled to [0, 1].
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layouts: tuple[FileLayout, ...]  # in order of preference; downloads take the first downloadable
    #: CIFAR-100 only: which labels to use, ``fine`` (100 classes) or ``coarse`` (20 superclasses).
    label_kind: str = "fine"


def _idx_layout(md5s: dict[str, tuple[str, int]], mirrors: tuple[str, ...]) -> FileLayout:
    return FileLayout("idx", tuple(DataFile(name, md5, size, mirrors) for name, (md5, size) in md5s.items()))


_MNIST = _idx_layout(
    {
        "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
        "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", 28881),
        "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", 1648877),
        "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", 4542),
    },
    MNIST_MIRRORS,
)
_FASHION = _idx_layout(
    {
        "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880),
        "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", 29515),
        "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", 4422102),
        "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", 5148),
    },
    FASHION_MIRRORS,
)

CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_MEMBERS = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR100_FOLDER = "cifar-100-python"
_CIFAR100_MEMBERS = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}


#: The binary version ("for C programs"): fixed-size records, no pickle. Member md5s of CIFAR-10
#: are those of ../shared/data/README.md (checked against the real files); CIFAR-100's are the
#: values published with loaders of the binary archive (not checked here: no copy on this machine).
CIFAR10_BINARY_FOLDER = "cifar-10-batches-bin"
_CIFAR10_BINARY_MEMBERS = {
    "data_batch_1.bin": ("5dd7e06a14cb22eb9f671a540d1b7c25", 30730000),
    "data_batch_2.bin": ("5ea93a67294ea407fff1d09f752e9692", 30730000),
    "data_batch_3.bin": ("942cd6a4bcdd0dd3c604fbe906cb4421", 30730000),
    "data_batch_4.bin": ("ae636b3ba5c66a11e91e8cb52e771fcb", 30730000),
    "data_batch_5.bin": ("53f37980c15c3d472c316c40844f3f0d", 30730000),
    "test_batch.bin": ("803d5f7f4d78ea53de84dbe85f74fb6d", 30730000),
}
CIFAR100_BINARY_FOLDER = "cifar-100-binary"
_CIFAR100_BINARY_MEMBERS = {
    "train.bin": ("6172c7755cfe09b2fe270c85cebc1b15", 50000 * 3074),
    "test.bin": ("4499cfba6c016c1be1438163640a0898", 10000 * 3074),
}


def _cifar_layouts(archive: DataFile, folder: str, members: dict[str, str], *, kind: str = "cifar"
                   ) -> tuple[FileLayout, ...]:
    """The archive; the folder it extracts to (inside the dataset folder, or the folder itself)."""
    def file(path: str, md5: str | tuple[str, int]) -> DataFile:
        return DataFile(path, md5) if isinstance(md5, str) else DataFile(path, *md5)

    return (
        FileLayout(f"{kind}-archive", (archive,)),
        FileLayout(f"{kind}-folder", tuple(file(f"{folder}/{m}", md5) for m, md5 in members.items())),
        FileLayout(f"{kind}-folder", tuple(file(m, md5) for m, md5 in members.items())),
    )


_CIFAR10 = _cifar_layouts(
    DataFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170498071, CIFAR_MIRRORS),
    CIFAR10_FOLDER,
    _CIFAR10_MEMBERS,
) + _cifar_layouts(
    DataFile("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", 170052171, CIFAR_MIRRORS),
    CIFAR10_BINARY_FOLDER,
    _CIFAR10_BINARY_MEMBERS,
    kind="cifar-binary",
)
_CIFAR100 = _cifar_layouts(
    DataFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", 169001437, CIFAR_MIRRORS),
    CIFAR100_FOLDER,
    _CIFAR100_MEMBERS,
) + _cifar_layouts(
    DataFile("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8", 168513733, CIFAR_MIRRORS),
    CIFAR100_BINARY_FOLDER,
    _CIFAR100_BINARY_MEMBERS,
    kind="cifar-binary",
)

# CIFAR statistics: the widely used per-channel values over the 50,000 training images.
_C10_MEAN, _C10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_C100_MEAN, _C100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

CATALOG: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("mnist", "mnist", 10, (0.1307,), (0.3081,), (_MNIST,)),
        DatasetInfo("fashion-mnist", "fashion-mnist", 10, (0.2860,), (0.3530,), (_FASHION,)),
        DatasetInfo("cifar-10", "cifar-10", 10, _C10_MEAN, _C10_STD, _CIFAR10),
        DatasetInfo("cifar-100", "cifar-100", 100, _C100_MEAN, _C100_STD, _CIFAR100),
        DatasetInfo("cifar-100-coarse", "cifar-100", 20, _C100_MEAN, _C100_STD, _CIFAR100,
                    label_kind="coarse"),
    )
}
