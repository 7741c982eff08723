"""GPU-resident training data: decode every photo once to uint8 and keep it on the device (train_data batches it).

A face set at 256 px is about 0.2 MB per photo as uint8, so tens of thousands fit on a GPU; batching, shuffling
and flipping on the device then cost microseconds instead of a decoding pipeline per step. Random numbers come
from a CPU `torch.Generator`, so the same seed gives the same batches on every device.
"""

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from faceinpaint.data.datasets import FileListDataset, TwoFaceDataset, decode_image, open_image_source
from faceinpaint.errors import InpaintError

Source = FileListDataset | TwoFaceDataset | str | os.PathLike | Sequence[str | os.PathLike]


def _names_and_reader(source: Source):
    """(display names, keys, reader) for any accepted source."""
    if isinstance(source, FileListDataset):
        return source.files, source.files, source.read
    if isinstance(source, TwoFaceDataset):
        keys = source.files()[0]
        return [f"{source.store.where}:{key}" for key in keys], keys, source.store.read
    if isinstance(source, (str, os.PathLike)):
        names, read = open_image_source(source)
        return names, names, read
    names = [str(path) for path in source]
    return names, names, lambda name: Path(name).read_bytes()


def image_names(source: Source) -> list[str]:
    """The names of `source`'s images, in the order load_uint8 returns them."""
    return list(_names_and_reader(source)[0])


def load_uint8(source: Source, resolution: int, workers: int = 8) -> torch.Tensor:
    """Decode every image of `source` once (shorter side resized to R, centre-cropped, no flip).

    Args:
        source: a FileListDataset, a TwoFaceDataset (all of its split's masked, real and reference photos, in
            the order of `TwoFaceDataset.files()`), a .flist / folder / .zip path (or a folder of .zip parts),
            or a sequence of image paths.
        resolution: output side R.
        workers: decoding threads (Pillow releases the GIL while decoding and resizing).

    Returns:
        uint8 (N, 3, R, R) RGB on the CPU, in the source's order.

    Raises:
        InpaintError: naming the first file that cannot be read or decoded.
    """
    names, keys, read = _names_and_reader(source)
    if not names:
        raise InpaintError("load_uint8: the source holds no images")
    images = torch.empty((len(names), 3, resolution, resolution), dtype=torch.uint8)

    def decode(index: int) -> None:
        try:
            data = read(keys[index])
        except OSError as error:
            raise InpaintError(f"image {names[index]}: cannot read it ({error.strerror or error})") from None
        images[index] = torch.from_numpy(decode_image(data, names[index], resolution)).permute(2, 0, 1)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for _ in pool.map(decode, range(len(names))):  # re-raises the first failure
            pass
    return images


def identity_index(source: Source) -> torch.Tensor:
    """int64 (N,) identity number per image of `source`, in `load_uint8`'s order.

    The identity is the listed one for a TwoFaceDataset and the parent folder's name for files (so an identity-
    folder set `<set>/<identity>/<image>` or a file list of one works); numbers follow sorted identity names.
    """
    if isinstance(source, TwoFaceDataset):
        labels = source.files()[1]
    else:
        labels = [Path(name).parent.name for name in _names_and_reader(source)[0]]
    numbers = {label: number for number, label in enumerate(sorted(set(labels)))}
    return torch.tensor([numbers[label] for label in labels], dtype=torch.int64)
