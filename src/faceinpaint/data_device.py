"""GPU-resident training data: decode every photo once to uint8, keep it on the device, batch it there.

A face set at 256 px is about 0.2 MB per photo as uint8, so tens of thousands fit on a GPU; batching, shuffling
and flipping on the device then cost microseconds instead of a decoding pipeline per step. Random numbers come
from a CPU `torch.Generator`, so the same seed gives the same batches on every device.
"""

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from faceinpaint.data import FileListDataset, TwoFaceDataset, decode_image, open_image_source
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


def _to_float(batch: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, R, R) + bool (B,) -> float (B, 3, R, R) in [-1, 1], mirrored where `flips`."""
    batch = torch.where(flips.view(-1, 1, 1, 1), batch.flip(-1), batch)
    return batch.float() / 127.5 - 1.0


class DeviceBatches:
    """Shuffled, flipped float batches from a uint8 image tensor kept on the device.

    Each `iter()` is one epoch: a fresh permutation from `generator`, every image exactly once (the last batch is
    smaller unless `drop_last`). Batches are float (B, 3, R, R) in [-1, 1] on `device`.

    Args:
        images: uint8 (N, 3, R, R), e.g. from `load_uint8`; moved to `device` once.
        batch_size: images per batch.
        generator: CPU torch.Generator for the order and the flips (same seed, same batches).
        device: where the images live and batches are made.
        flip: mirror each image left-right with probability 1/2.
        drop_last: skip the last, incomplete batch of an epoch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
        device: str | torch.device = "cpu",
        flip: bool = True,
        drop_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise InpaintError(f"images: expected uint8 (N, 3, R, R), got {images.dtype} {tuple(images.shape)}")
        if batch_size < 1:
            raise InpaintError(f"batch_size {batch_size}: must be at least 1")
        self.images = images.to(device)
        self.batch_size, self.generator, self.device = batch_size, generator, torch.device(device)
        self.flip, self.drop_last = flip, drop_last

    def __len__(self) -> int:
        count = len(self.images)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def _flips(self, count: int) -> torch.Tensor:
        if not self.flip:
            return torch.zeros(count, dtype=torch.bool, device=self.device)
        return (torch.rand(count, generator=self.generator) < 0.5).to(self.device)

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(self.images), generator=self.generator).to(self.device)
        for batch in range(len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            yield _to_float(self.images[index], self._flips(len(index)))


class DeviceReferenceBatches(DeviceBatches):
    """Two-Face batches on the device: {"image", "reference", "real"}, each float (B, 3, R, R) in [-1, 1].

    An epoch visits, in random order, every image whose identity has at least two photos; its reference is
    drawn uniformly from the other photos of the same identity (never the image itself); "real" is another
    shuffled pass over all images, for the discriminator. Unlike the seed's folders, every photo may play all
    three roles, which triples the data a small set offers.

    Args:
        images: uint8 (N, 3, R, R), e.g. `load_uint8(source, R)`.
        identities: int64 (N,) identity number per image, e.g. `identity_index(source)`.
        batch_size, generator, device, flip, drop_last: as for DeviceBatches.
    """

    def __init__(
        self,
        images: torch.Tensor,
        identities: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
        device: str | torch.device = "cpu",
        flip: bool = True,
        drop_last: bool = False,
    ) -> None:
        super().__init__(images, batch_size, generator, device, flip, drop_last)
        identities = torch.as_tensor(identities, dtype=torch.int64).cpu()
        if identities.shape != (len(images),):
            raise InpaintError(f"identities: expected shape ({len(images)},), got {tuple(identities.shape)}")
        # Images sorted by identity: each identity is a run [start, start + count) of `by_identity`.
        self.by_identity = torch.argsort(identities, stable=True)
        _, inverse, counts = torch.unique(identities, return_inverse=True, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(identities)
        rank[self.by_identity] = torch.arange(len(identities))
        self.start, self.count, self.rank = starts[inverse], counts[inverse], rank - starts[inverse]  # per image
        self.targets = torch.nonzero(self.count >= 2).flatten()
        if len(self.targets) == 0:
            raise InpaintError("identities: no identity has two photos, so no image can have a reference")
        self.by_identity = self.by_identity.to(self.device)

    def __len__(self) -> int:
        count = len(self.targets)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = self.targets[torch.randperm(len(self.targets), generator=self.generator)]
        reals = torch.randperm(len(self.images), generator=self.generator)
        for batch in range(len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            # Uniform over the identity's other photos: draw among count - 1 and skip over the image's own rank.
            draw = (torch.rand(len(index), generator=self.generator) * (self.count[index] - 1)).long()
            draw = draw + (draw >= self.rank[index]).long()
            reference = self.by_identity[(self.start[index] + draw).to(self.device)]
            real = reals[batch * self.batch_size : batch * self.batch_size + len(index)].to(self.device)
            flips = self._flips(3 * len(index)).view(3, -1)
            yield {
                "image": _to_float(self.images[index.to(self.device)], flips[0]),
                "reference": _to_float(self.images[reference], flips[1]),
                "real": _to_float(self.images[real], flips[2]),
            }
