"""An image folder in torchvision's ``ImageFolder`` layout, with the standard ImageNet transforms and a validation split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Subset

from pruneaware.data.splits import DatasetSplits
from pruneaware.core.errors import ConfigError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet statistics, as torchvision's pretrained models expect
VALIDATION_FOLDERS = ("val", "validation", "test")


def load_image_folder(root: Path, *, seed: int = 0, image_size: int = 224, val_fraction: float = 0.1, augment: bool = True) -> DatasetSplits:
    """``root/<class>/<image>`` split by ``val_fraction`` (stratified, drawn with ``seed``), or ``root/train`` + ``root/val`` as given."""
    if not 0 < val_fraction < 1:
        raise ConfigError("train.data_options.val_fraction", val_fraction, "a fraction between 0 and 1")
    if image_size < 8:
        raise ConfigError("train.data_options.image_size", image_size, "an image side of at least 8 pixels")
    train_transform, eval_transform = _transforms(image_size, augment)
    validation = next((root / name for name in VALIDATION_FOLDERS if (root / name).is_dir()), None)
    if (root / "train").is_dir() and validation is not None:
        train, test = _folder(root / "train", train_transform), _folder(validation, eval_transform)
        if train.classes != test.classes:
            raise ConfigError("train.dataset", str(root), f"the same class folders in train/ and {validation.name}/ (got {train.classes} and {test.classes})")
    else:
        train_view, test_view = _folder(root, train_transform), _folder(root, eval_transform)
        train_indices, test_indices = _stratified_split(np.asarray(train_view.targets), val_fraction, seed, root)
        train, test = Subset(train_view, train_indices), Subset(test_view, test_indices)
        train.classes = train_view.classes  # type: ignore[attr-defined]
    return DatasetSplits(train, test, (3, image_size, image_size), len(train.classes), str(root))  # type: ignore[arg-type]


def _folder(root: Path, transform: object):  # noqa: ANN202 - torchvision's ImageFolder
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root), transform=transform)
    except FileNotFoundError as error:
        raise ConfigError(
            "train.dataset", str(root), f"an image folder with one subfolder of images per class (root/<class>/<image>.png); {error}"
        ) from None


def _transforms(size: int, augment: bool) -> tuple[object, object]:
    from torchvision import transforms

    normalize = [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    evaluation = transforms.Compose([transforms.Resize(round(size / 0.875)), transforms.CenterCrop(size), *normalize])
    if not augment:
        return evaluation, evaluation
    training = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), *normalize])
    return training, evaluation


def _stratified_split(targets: np.ndarray, fraction: float, seed: int, root: Path) -> tuple[list[int], list[int]]:
    """At least one validation image per class, and at least one training image per class."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        if len(members) < 2:
            raise ConfigError("train.dataset", str(root), f"at least 2 images per class for a training and a validation split (class index {label} has {len(members)})")
        count = min(max(1, round(fraction * len(members))), len(members) - 1)
        test += members[:count].tolist()
        train += members[count:].tolist()
    return sorted(train), sorted(test)
