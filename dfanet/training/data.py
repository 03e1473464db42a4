"""Segmentation data sets in their on-disk layouts (Cityscapes, CamVid), and a data order that resumes exactly.

Every sample's augmentation draws from its own generator, seeded from (seed, epoch, index), and the order of
epoch e is a permutation seeded from (seed, e). So what iteration k sees depends only on the seed and k: not on
the number of workers, nor on whether the run was interrupted and resumed at k.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from .images import IMAGE_SUFFIXES, normalize, open_image, rgb_array

IGNORE_INDEX = 255

# The common 11-class CamVid (SegNet's layout); annotation value 11 is "void".
CAMVID_CLASSES = ("sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car", "pedestrian",
                  "bicyclist")

# Seed-sequence domains, so that the data order and the augmentation never draw from the same stream.
_ORDER, _AUGMENT = 0, 1


def cityscapes_classes() -> tuple[str, ...]:
    from cityscapesscripts.helpers.labels import labels

    return tuple(label.name for label in sorted(labels, key=lambda label: label.trainId)
                 if 0 <= label.trainId < IGNORE_INDEX)


class LabelMap:
    """Raw mask values -> train ids (or IGNORE_INDEX) through a 256-entry table; any other value is an error."""

    def __init__(self, table: dict[int, int]):
        self.lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        self.known = np.zeros(256, dtype=bool)
        for raw, train_id in table.items():
            self.lut[raw] = train_id
            self.known[raw] = True

    def __call__(self, mask: np.ndarray, path: Path) -> np.ndarray:
        if mask.dtype != np.uint8:  # 16-bit or int PNGs: only values < 256 can be label ids
            outside = (mask < 0) | (mask > 255)
            if outside.any():
                raise ValueError(f"{path}: unknown label ids {np.unique(mask[outside]).tolist()[:10]}")
            mask = mask.astype(np.uint8)
        unknown = ~self.known[mask]
        if unknown.any():
            raise ValueError(f"{path}: unknown label ids {np.unique(mask[unknown]).tolist()[:10]} "
                             f"(known: {np.flatnonzero(self.known).tolist()})")
        return self.lut[mask]


def cityscapes_label_map() -> LabelMap:
    from cityscapesscripts.helpers.labels import labels

    # The license plate's id is -1; written to an 8-bit PNG it reads as 255. Every non-train class is ignored.
    return LabelMap({label.id % 256: label.trainId if 0 <= label.trainId < IGNORE_INDEX else IGNORE_INDEX
                     for label in labels})


def camvid_label_map() -> LabelMap:
    return LabelMap({**{i: i for i in range(len(CAMVID_CLASSES))}, len(CAMVID_CLASSES): IGNORE_INDEX,
                     IGNORE_INDEX: IGNORE_INDEX})


def _require_dir(path: Path, dataset: str, layout: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{dataset}: no folder {path} (expected {layout})")


def cityscapes_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    layout = "<data-root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine/<split>/<city>/*_gtFine_labelIds.png"
    image_dir = root / "leftImg8bit" / split
    _require_dir(image_dir, "cityscapes", layout)
    pairs = []
    for image in sorted(image_dir.glob("*/*_leftImg8bit.png")):
        name = image.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
        mask = root / "gtFine" / split / image.parent.name / name
        pairs.append((image, mask))
    return pairs


def camvid_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    layout = "<data-root>/<split>/*.png with masks of the same name in <data-root>/<split>annot/"
    image_dir, mask_dir = root / split, root / f"{split}annot"
    _require_dir(image_dir, "camvid", layout)
    _require_dir(mask_dir, "camvid", layout)
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [(image, mask_dir / f"{image.stem}.png") for image in images]


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set needs: its classes, how to find and label its files, and the recipe's defaults for it."""

    name: str
    classes: Callable[[], tuple[str, ...]]
    pairs: Callable[[Path, str], list[tuple[Path, Path]]]
    label_map: Callable[[], LabelMap]
    crop: tuple[int, int]  # training crop, H x W
    iters: int

    def open(self, root: str | os.PathLike, split: str) -> SegmentationFiles:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{self.name}: --data-root {root} is not a folder")
        pairs = self.pairs(root, split)
        if not pairs:
            raise FileNotFoundError(f"{self.name}: no images found for split {split!r} under {root}")
        for image, mask in pairs:
            if not mask.is_file():
                raise FileNotFoundError(f"{self.name}: no mask {mask} for image {image}")
        return SegmentationFiles(self.name, split, pairs, self.classes(), self.label_map())


DATASETS: dict[str, DatasetSpec] = {
    # The paper: 40K iterations on Cityscapes; its ablations train and evaluate at 1024 x 1024 crops.
    "cityscapes": DatasetSpec("cityscapes", cityscapes_classes, cityscapes_pairs, cityscapes_label_map,
                              crop=(1024, 1024), iters=40_000),
    # The paper trains CamVid at its full 720 x 960 without saying for how long; ~1000 epochs of 367 images at
    # batch 48 is our choice.
    "camvid": DatasetSpec("camvid", lambda: CAMVID_CLASSES, camvid_pairs, camvid_label_map,
                          crop=(720, 960), iters=8_000),
}


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"dataset: expected one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name]


class SampleError(ValueError):
    """A sample that cannot be read. DataLoader re-raises a worker's exception as ``type(message)`` with a message
    of its own ("Caught ... in DataLoader worker process N.", then the worker's whole traceback); this class takes
    the original one-line message back out of it, so an error reads the same with and without loader workers."""

    def __init__(self, message: str):
        super().__init__(_worker_message_removed(message, f"{__name__}.{type(self).__qualname__}"))


def _worker_message_removed(message: str, qualified_name: str) -> str:
    """The message after the last "<qualified_name>: " line of a worker's traceback; ``message`` if it is none."""
    marker = f"\n{qualified_name}: "
    if not message.startswith("Caught ") or marker not in message:
        return message
    return message[message.rindex(marker) + len(marker):].rstrip("\n")


def read_sample(read: Callable[[int], tuple], index: int) -> tuple:
    """``read(index)``, with any error about its files (unreadable, wrong size, unknown ids) a :class:`SampleError`."""
    try:
        return read(index)
    except (ValueError, OSError) as err:  # OSError: FileNotFoundError, a file that went away, a bad disk
        raise SampleError(str(err)) from None


class SegmentationFiles:
    """The (image, mask) files of one split. ``read(i)`` -> (H x W x 3 uint8 RGB, H x W uint8 train ids)."""

    def __init__(self, name: str, split: str, pairs: list[tuple[Path, Path]], classes: tuple[str, ...],
                 label_map: LabelMap):
        self.name, self.split, self.pairs, self.classes, self.label_map = name, split, pairs, classes, label_map

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        image = open_image(image_path)
        mask = open_image(mask_path)
        _check_headers(image, mask, image_path, mask_path)
        rgb = rgb_array(image, image_path)
        try:
            raw = np.asarray(mask)
        except OSError as err:  # a truncated file fails only when its pixels are decoded
            raise ValueError(f"{mask_path}: cannot decode ({err})") from err
        return rgb, self.label_map(raw, mask_path)

    def check(self, index: int) -> None:
        """Refuse what ``read(index)`` would, at a fraction of its cost: both files' headers (readable, the sizes,
        the mask's mode) and the mask's label ids. The image's pixels are not decoded (a truncated image passes)."""
        image_path, mask_path = self.pairs[index]
        with open_image(image_path) as image, open_image(mask_path) as mask:
            _check_headers(image, mask, image_path, mask_path)
            try:
                raw = np.asarray(mask)
            except OSError as err:
                raise ValueError(f"{mask_path}: cannot decode ({err})") from err
            self.label_map(raw, mask_path)

    def check_all(self) -> None:
        """:meth:`check` every pair (errors as :class:`SampleError`, naming the file)."""
        for index in range(len(self)):
            read_sample(self.check, index)


def _check_headers(image: Image.Image, mask: Image.Image, image_path: Path, mask_path: Path) -> None:
    if image.size != mask.size:
        raise ValueError(f"{mask_path}: mask is {mask.size[0]}x{mask.size[1]} (WxH) but its image "
                         f"{image_path} is {image.size[0]}x{image.size[1]}")
    if mask.mode not in ("L", "P", "I", "I;16"):
        raise ValueError(f"{mask_path}: expected a single-channel label image, got mode {mask.mode}")


def _resize(array: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    h, w = size
    return np.asarray(Image.fromarray(np.ascontiguousarray(array)).resize((w, h), resample))


def random_crop(image: np.ndarray, target: np.ndarray | None, crop: tuple[int, int],
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A crop x crop window at a random place; where it reaches past the image (bottom/right) the image is padded
    with the mean colour (0 after normalisation) and the mask with IGNORE_INDEX."""
    ch, cw = crop
    h, w = image.shape[:2]
    top = int(rng.integers(0, max(h - ch, 0) + 1))
    left = int(rng.integers(0, max(w - cw, 0) + 1))
    window = (slice(top, top + ch), slice(left, left + cw))
    part = image[window]
    out = torch.zeros(3, ch, cw)
    out[:, : part.shape[0], : part.shape[1]] = normalize(part)
    if target is None:
        return out, None
    labels = torch.full((ch, cw), IGNORE_INDEX, dtype=torch.int64)
    labels[: part.shape[0], : part.shape[1]] = torch.from_numpy(target[window].astype(np.int64))
    return out, labels


@dataclass(frozen=True)
class TrainTransform:
    """The paper's augmentation: random horizontal flip, random rescale in ``scale``, random crop (padded)."""

    crop: tuple[int, int]
    scale: tuple[float, float] = (0.75, 1.75)

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        s = rng.uniform(*self.scale)
        size = (max(1, round(mask.shape[0] * s)), max(1, round(mask.shape[1] * s)))
        image = _resize(image, size, Image.Resampling.BILINEAR)
        mask = _resize(mask, size, Image.Resampling.NEAREST)
        return random_crop(image, mask, self.crop, rng)


def eval_transform(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole image at full resolution: normalised image and the mask as int64 train ids."""
    return normalize(image), torch.from_numpy(mask.astype(np.int64))


class AugmentedDataset(Dataset):
    """Items keyed by (epoch, index) from :class:`InfiniteSampler`; each sample's augmentation RNG is seeded from
    (seed, epoch, index). ``read(index)`` gives the raw sample, ``transform(*sample, rng)`` the tensors."""

    def __init__(self, read: Callable[[int], tuple], transform: Callable, seed: int):
        self.read, self.transform, self.seed = read, transform, seed

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        rng = np.random.default_rng([self.seed, _AUGMENT, epoch, index])
        return self.transform(*read_sample(self.read, index), rng)


class EvalDataset(Dataset):
    """``transform(*read(index))`` for the given indices, in order (no randomness)."""

    def __init__(self, read: Callable[[int], tuple], transform: Callable, indices: Sequence[int]):
        self.read, self.transform, self.indices = read, transform, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.transform(*read_sample(self.read, self.indices[i]))


class InfiniteSampler(Sampler):
    """Yields (epoch, index) keys forever, ``batch_size`` per iteration, starting at ``start_iteration``.

    The sample stream is the concatenation of per-epoch permutations (epoch e's seeded from (seed, e)); iteration i
    takes the global batch stream[i*G : (i+1)*G], G = batch_size * world_size, and rank r its r-th slice of it —
    the same samples whatever the world size, disjoint across ranks (DistributedSampler's sharding, without
    per-epoch padding: batches run on across epoch boundaries).
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_iteration: int = 0):
        if size < 1:
            raise ValueError("sampler: the data set is empty")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size, self.start_iteration = rank, world_size, start_iteration
        self._order: tuple[int, np.ndarray] | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, _ORDER, epoch]).permutation(self.size))
        return self._order[1]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        iteration = self.start_iteration
        global_batch = self.batch_size * self.world_size
        while True:
            first = iteration * global_batch + self.rank * self.batch_size
            for position in range(first, first + self.batch_size):
                epoch, k = divmod(position, self.size)
                yield epoch, int(self.epoch_order(epoch)[k])
            iteration += 1


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which a scheduler or taskset narrows), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(most: int) -> int:
    """A command's default number of loader workers: ``most``, but no more than one per CPU available: more only
    compete for them (and DataLoader warns about it)."""
    return max(1, min(most, available_cpus()))


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers outlive a SIGTERM/SIGINT sent to the whole process group, so that the training process can
    finish its iteration and save a checkpoint; they still exit with it (DataLoader's parent watchdog)."""
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)


def train_loader(read: Callable[[int], tuple], size: int, transform: Callable, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, start_iteration: int = 0, workers: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    """An endless loader of this rank's batches from iteration ``start_iteration`` on."""
    sampler = InfiniteSampler(size, batch_size, seed, rank, world_size, start_iteration)
    return DataLoader(AugmentedDataset(read, transform, seed), batch_size=batch_size, sampler=sampler,
                      num_workers=workers, pin_memory=pin_memory, worker_init_fn=_ignore_stop_signals)


@contextmanager
def batches_of(loader: Iterable) -> Iterator[Iterator]:
    """``iter(loader)``, whose worker processes are shut down on leaving, also on an error. Left to garbage
    collection, an iterator that an exception's traceback holds (a worker's error re-raised in the main process
    makes such a cycle) outlives the run: at exit, multiprocessing then SIGTERMs the workers and waits for them,
    and they ignore SIGTERM (see _ignore_stop_signals), so the process never exits."""
    batches = iter(loader)
    try:
        yield batches
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)  # DataLoader's iterator with workers
        if shutdown is not None:
            shutdown()
