"""Data: datasets, batches, splits, scaling, one-hot labels, user files and built-in datasets."""

from .builtin import DATASETS, cache_dir, load_dataset
from .bundle import DataBundle, encode_labels
from .dataset import (
    DataLoader,
    Dataset,
    Standardizer,
    Subset,
    TensorDataset,
    one_hot,
    random_split,
    train_val_test_split,
)
from .files import load_array_file, load_csv, load_file

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataLoader",
    "Dataset",
    "Standardizer",
    "Subset",
    "TensorDataset",
    "cache_dir",
    "encode_labels",
    "load_array_file",
    "load_csv",
    "load_dataset",
    "load_file",
    "one_hot",
    "random_split",
    "train_val_test_split",
]
