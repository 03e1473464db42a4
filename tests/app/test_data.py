"""Data sets in their real layouts, the paper's augmentation, a data order that resumes exactly, bad files."""

import numpy as np
import pytest
import torch
from PIL import Image

from dfanet.training.data import (
    CAMVID_CLASSES,
    IGNORE_INDEX,
    InfiniteSampler,
    TrainTransform,
    get_dataset,
    random_crop,
    train_loader,
)
from dfanet.training.images import MEAN, STD

from ..synthetic import (
    BUILDING,
    CAR,
    EGO_VEHICLE,
    ROAD,
    TRAIN_IDS,
    cityscapes_mask_path,
    make_camvid,
    make_cityscapes,
)


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    return make_cityscapes(tmp_path_factory.mktemp("cityscapes"), {"train": 6, "val": 2}, size=(48, 64))


def test_cityscapes_layout_and_train_ids(cityscapes):
    files = get_dataset("cityscapes").open(cityscapes, "train")
    assert len(files) == 6 and files.num_classes == 19
    assert files.classes[0] == "road" and files.classes[13] == "car" and files.classes[18] == "bicycle"
    image, mask = files.read(0)
    raw = np.asarray(Image.open(files.pairs[0][1]))
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    for label_id, train_id in TRAIN_IDS.items():
        assert (mask[raw == label_id] == train_id).all()
    assert (mask[raw == EGO_VEHICLE] == IGNORE_INDEX).all() and (raw == EGO_VEHICLE).any()


def test_cityscapes_label_table_comes_from_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels

    label_map = get_dataset("cityscapes").label_map()
    ids = np.array([[label.id % 256 for label in labels]], dtype=np.uint8)
    expected = [label.trainId if 0 <= label.trainId < 255 else 255 for label in labels]
    assert label_map(ids, "x.png")[0].tolist() == expected


def test_camvid_layout_and_void(tmp_path):
    root = make_camvid(tmp_path, {"train": 2, "val": 1, "test": 1})
    spec = get_dataset("camvid")
    assert [len(spec.open(root, s)) for s in ("train", "val", "test")] == [2, 1, 1]
    files = spec.open(root, "train")
    assert files.classes == CAMVID_CLASSES and files.num_classes == 11
    _, mask = files.read(1)
    raw = np.asarray(Image.open(files.pairs[1][1]))
    assert (mask[raw == 11] == IGNORE_INDEX).all() and (raw == 11).any()
    assert (mask[raw < 11] == raw[raw < 11]).all()


def test_train_transform_crop_flip_scale_and_ignore_padding():
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[:, :30] = 255  # left half white
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[:, 30:] = 1
    seen_flip = seen_pad = False
    for seed in range(20):
        x, y = TrainTransform(crop=(64, 96), scale=(0.75, 1.75))(image, mask, np.random.default_rng(seed))
        assert x.shape == (3, 64, 96) and y.shape == (64, 96) and y.dtype == torch.int64
        assert set(y.unique().tolist()) <= {0, 1, IGNORE_INDEX}
        padded = y == IGNORE_INDEX
        assert (x[:, padded] == 0).all()  # padding is the mean colour, i.e. 0 after normalisation
        seen_pad |= bool(padded.any())
        # Image and mask move together: white pixels are class 0, black ones class 1 (bilinear resizing blends
        # the image along the edge, where the mask, resized by nearest neighbour, cannot be grey).
        red = x[0] * STD[0] + MEAN[0]
        white, black = (red > 0.95) & ~padded, (red < 0.05) & ~padded
        assert (y[white] == 0).all() and (y[black] == 1).all()
        assert white.sum() + black.sum() >= 0.9 * (~padded).sum()
        seen_flip |= bool(white[:, -1].any())
    assert seen_flip and seen_pad


def test_crop_normalises_with_the_predict_statistics():
    image = np.full((32, 32, 3), 255, dtype=np.uint8)
    x, _ = random_crop(image, None, (32, 32), np.random.default_rng(0))
    expected = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(x[:, 5, 7], expected)


def test_sampler_shards_each_global_batch_like_one_process():
    one = iter(InfiniteSampler(10, batch_size=6, seed=3))
    ranks = [iter(InfiniteSampler(10, batch_size=3, seed=3, rank=r, world_size=2)) for r in range(2)]
    for _ in range(7):  # runs across several epoch boundaries
        global_batch = [next(one) for _ in range(6)]
        sharded = [next(ranks[r]) for r in range(2) for _ in range(3)]
        assert sharded == global_batch
    assert len(set(sharded[:3]) & set(sharded[3:])) == 0  # the ranks' shares of a batch are disjoint


def test_sampler_visits_every_sample_once_per_epoch_and_resumes_at_any_iteration():
    keys = [k for _, k in zip(range(40), InfiniteSampler(10, batch_size=4, seed=5))]
    for epoch in range(4):
        assert sorted(i for e, i in keys if e == epoch) == list(range(10))
    assert [i for _, i in keys[:10]] != [i for _, i in keys[10:20]]  # a new order each epoch
    resumed = [k for _, k in zip(range(12), InfiniteSampler(10, batch_size=4, seed=5, start_iteration=7))]
    assert resumed == keys[28:40]


def test_loader_batches_do_not_depend_on_workers_or_resume(cityscapes):
    files = get_dataset("cityscapes").open(cityscapes, "train")
    transform = TrainTransform((32, 48))

    def batches(workers, start, n):
        loader = train_loader(files.read, len(files), transform, 2, seed=1, start_iteration=start, workers=workers)
        return [b for _, b in zip(range(n), loader)]

    straight = batches(0, 0, 5)
    resumed = batches(2, 3, 2)
    for (x0, y0), (x1, y1) in zip(straight[3:], resumed):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert not torch.equal(straight[0][0], straight[1][0])


def test_wrong_data_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"--data-root {tmp_path / 'nope'} is not a folder"):
        get_dataset("cityscapes").open(tmp_path / "nope", "train")
    with pytest.raises(FileNotFoundError, match=r"no folder .*leftImg8bit/train \(expected <data-root>/leftImg8bit"):
        get_dataset("cityscapes").open(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"camvid: no folder .*/train"):
        get_dataset("camvid").open(tmp_path, "train")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="dataset: expected one of"):
        get_dataset("ade20k")


@pytest.fixture
def small_cityscapes(tmp_path):
    return make_cityscapes(tmp_path, {"train": 2}, size=(32, 40))


def test_missing_mask_names_the_file(small_cityscapes):
    mask = cityscapes_mask_path(small_cityscapes, "train", 1)
    mask.unlink()
    with pytest.raises(FileNotFoundError, match=f"no mask {mask} for image .*city1_000000_000001_leftImg8bit.png"):
        get_dataset("cityscapes").open(small_cityscapes, "train")


def test_unknown_label_ids_name_the_file(small_cityscapes):
    mask = cityscapes_mask_path(small_cityscapes, "train", 0)
    raw = np.asarray(Image.open(mask)).copy()
    raw[3, 4], raw[5, 6] = 40, 200
    Image.fromarray(raw).save(mask)
    files = get_dataset("cityscapes").open(small_cityscapes, "train")
    with pytest.raises(ValueError, match=rf"{mask}: unknown label ids \[40, 200\]"):
        files.read(0)
    files.read(1)  # the other, intact, mask is fine


def test_image_and_mask_of_different_sizes_name_both_files(small_cityscapes):
    mask = cityscapes_mask_path(small_cityscapes, "train", 0)
    Image.fromarray(np.full((16, 40), ROAD, dtype=np.uint8)).save(mask)
    files = get_dataset("cityscapes").open(small_cityscapes, "train")
    with pytest.raises(ValueError, match=rf"{mask}: mask is 40x16 \(WxH\) but its image .*_leftImg8bit.png is 40x32"):
        files.read(0)


def test_colour_mask_and_corrupt_mask_are_refused(small_cityscapes):
    files = get_dataset("cityscapes").open(small_cityscapes, "train")
    mask0, mask1 = (cityscapes_mask_path(small_cityscapes, "train", i) for i in (0, 1))
    Image.fromarray(np.zeros((32, 40, 3), dtype=np.uint8)).save(mask0)
    with pytest.raises(ValueError, match=rf"{mask0}: expected a single-channel label image, got mode RGB"):
        files.read(0)
    mask1.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=rf"{mask1}: cannot read as an image"):
        files.read(1)


def test_shapes_are_in_every_synthetic_scene(cityscapes):
    """The synthetic data the training tests rely on has every class it is meant to have."""
    files = get_dataset("cityscapes").open(cityscapes, "val")
    for i in range(len(files)):
        raw = np.asarray(Image.open(files.pairs[i][1]))
        assert {ROAD, BUILDING, CAR} <= set(np.unique(raw).tolist())
