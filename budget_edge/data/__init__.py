"""Datasets as numpy arrays: Fashion-MNIST, CIFAR-10/100, image folders.

Torch-free (the runtime's `bench` reads data through here on a device without
torch). The torch wrapper with normalisation and augmentation is
`budget_edge.data.torch_dataset`, imported on its own.
"""

from budget_edge.data.arrays import DatasetInfo, ImageArrays
from budget_edge.data.registry import DATASETS, list_datasets, load_arrays

__all__ = ["DATASETS", "DatasetInfo", "ImageArrays", "list_datasets", "load_arrays"]
