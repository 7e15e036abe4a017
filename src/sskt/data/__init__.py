"""Data: datasets by name, replayable augmentation, limited-label subsets, training and evaluation batches.

Importing this package registers every dataset in ``DATASETS``.
"""

from sskt.data import clips as _clips  # noqa: F401 (registers the 'clip' augmentation)
from sskt.data import video as _video  # noqa: F401 (registers ucf101 and hmdb51)
from sskt.data.augment import AUGMENTS, Augment, Normalize, build_augment, normalize
from sskt.data.datasets import DATASETS, TensorImageSet, build_dataset, stored_shape
from sskt.data.folder import FolderImageSet
from sskt.data.spec import Batch, DatasetSpec, ImageSet
from sskt.data.stream import TrainStream, ViewProvider, eval_batches
from sskt.data.subsets import labeled_subset
from sskt.data.voc import VOC_CLASSES

__all__ = [
    "AUGMENTS",
    "Augment",
    "Batch",
    "DATASETS",
    "DatasetSpec",
    "FolderImageSet",
    "ImageSet",
    "Normalize",
    "TensorImageSet",
    "TrainStream",
    "VOC_CLASSES",
    "ViewProvider",
    "build_augment",
    "build_dataset",
    "eval_batches",
    "labeled_subset",
    "normalize",
    "stored_shape",
]
