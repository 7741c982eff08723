"""dlib's 68 landmarks of every training photo, found once and kept beside the file list (Two-Face v2's prior).

A 256 px photo costs about 20 ms of HOG detection and shape prediction; a training step needs a few of them per
sample, so the points are found once (in worker processes), saved as `<data path>.landmarks<R>.npz` (the photos'
names and their (N, 68, 2) float32 points: geometry, no pixels) and reused while the names match. Where no face is
found the photo is taken to be an FFHQ-aligned crop: `reference_warp.ALIGNED_LANDMARKS_68`. Needs the `faces`
extra.
"""

import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from faceinpaint.atomic import atomic_write
from faceinpaint.faces.reference_warp import aligned_landmarks, face_landmarks

CHUNK = 64  # photos per worker task


def _chunk_landmarks(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 68, 2) float32, found (n,) bool) of uint8 photos (n, R, R, 3)."""
    fallback = aligned_landmarks(images.shape[1], 68)
    points, found = [], []
    for image in images:
        landmarks = face_landmarks(np.ascontiguousarray(image), 68)
        found.append(landmarks is not None)
        points.append(fallback if landmarks is None else landmarks)
    return np.asarray(points, np.float32), np.asarray(found)


def find_landmarks(images: torch.Tensor, workers: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(points (N, 68, 2) float32, found (N,) bool) of uint8 photos (N, 3, R, R), in `workers` processes."""
    chunks = [images[start : start + CHUNK].permute(0, 2, 3, 1).numpy() for start in range(0, len(images), CHUNK)]
    if workers <= 1 or len(chunks) == 1:
        results = [_chunk_landmarks(chunk) for chunk in chunks]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_chunk_landmarks, chunks))
    points = np.concatenate([points for points, _ in results])
    return torch.from_numpy(points), torch.from_numpy(np.concatenate([found for _, found in results]))


def cached_landmarks(images: torch.Tensor, names: list[str], cache: Path, workers: int = 2) -> torch.Tensor:
    """The landmarks (N, 68, 2) of `images` (uint8 (N, 3, R, R), named `names`): from `cache` when it holds the
    same names, else found now and saved there (atomically)."""
    if cache.is_file():
        with np.load(cache) as saved:
            if saved["names"].tolist() == list(names):
                return torch.from_numpy(saved["points"])
    print(f"faceinpaint: finding the landmarks of {len(names)} photos once (kept in {cache})", file=sys.stderr)
    points, found = find_landmarks(images, workers)
    if not found.all():
        print(f"faceinpaint: no face found in {int((~found).sum())} photos: aligned mean used", file=sys.stderr)
    with atomic_write(cache) as stream:
        np.savez(stream, names=np.asarray(names), points=points.numpy(), found=found.numpy())
    return points
