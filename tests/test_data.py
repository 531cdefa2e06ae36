import gzip
import shutil
from dataclasses import replace

import pytest
import torch

from distill.data import (
    Augment,
    DataModule,
    IndexBatches,
    augment,
    augmentation_uniforms,
    cutmix,
    load_split,
    normalize,
    prepare,
    read_idx,
    to_unit,
)
from distill.datasets.base import train_val_indices
from distill.errors import DistillError

# From ../shared/data/mnist/README.md.
TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_train_split_has_the_documented_shapes_dtypes_and_class_counts(data_dir):
    images, labels = load_split("train", data_dir, download=False)
    assert images.shape == (60_000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60_000,) and labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == TRAIN_CLASS_COUNTS


def test_test_split_has_ten_thousand_images_of_every_class(data_dir):
    images, labels = load_split("test", data_dir, download=False)
    assert images.shape == (10_000, 28, 28)
    assert sorted(labels.unique().tolist()) == list(range(10))
    assert 0 < images.float().mean() < 255


def test_gzipped_and_plain_idx_files_read_the_same(data_dir, tmp_path):
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress((data_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    assert torch.equal(read_idx(plain), read_idx(data_dir / "t10k-labels-idx1-ubyte.gz"))


def test_a_truncated_file_is_a_clear_error(data_dir, tmp_path):
    raw = gzip.decompress((data_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    broken = tmp_path / "t10k-labels-idx1-ubyte"
    broken.write_bytes(raw[:-10])
    with pytest.raises(DistillError, match="truncated"):
        read_idx(broken)


def test_a_missing_file_names_the_folder_and_the_files(data_dir, tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(data_dir / name, tmp_path / name)
    with pytest.raises(DistillError) as error:
        load_split("train", tmp_path, download=False)
    assert str(tmp_path) in str(error.value) and "train-images-idx3-ubyte" in str(error.value)


def test_validation_slice_is_fixed_and_disjoint_from_training():
    train, val = train_val_indices()
    again_train, again_val = train_val_indices()
    assert torch.equal(val, again_val) and len(val) == 5_000 and len(train) == 55_000
    assert not set(train.tolist()) & set(val.tolist())


@pytest.fixture(scope="module")
def digits(data_dir):
    images, _ = load_split("test", data_dir, download=False)
    return images[:64]


def test_augmentation_keeps_shape_and_range_and_changes_images(digits):
    x = to_unit(digits)
    out = augment(x, augmentation_uniforms(seed=0, epoch=0)[:64], Augment())
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    changed = (out - x).abs().flatten(1).amax(1) > 0.1
    assert changed.float().mean() > 0.9


def test_augmentation_is_identity_at_zero_strength(digits):
    x = to_unit(digits)
    uniforms = augmentation_uniforms(seed=0, epoch=0)[:64]
    # Zero ranges with random draws, and full ranges with all-zero draws: both leave images as is.
    assert torch.allclose(augment(x, uniforms, Augment().scaled(0.0)), x, atol=1e-5)
    assert torch.allclose(augment(x, torch.zeros(64, 5), Augment(degrees=30, translate=0.2,
                                                                  scale=0.2)), x, atol=1e-5)


def test_random_magnitude_scales_each_images_draw_between_identity_and_full_range(digits):
    x = to_unit(digits)
    uniforms = augmentation_uniforms(seed=0, epoch=0)[:64]
    spec = Augment(random_magnitude=True)
    none, full = uniforms.clone(), uniforms.clone()
    none[:, 4], full[:, 4] = 0, 1
    assert torch.allclose(augment(x, none, spec), x, atol=1e-5)
    assert torch.allclose(augment(x, full, spec), augment(x, uniforms, Augment()), atol=1e-6)
    half = uniforms.clone()
    half[:, 4] = 0.5
    assert torch.allclose(augment(x, half, spec), augment(x, uniforms, Augment().scaled(0.5)),
                          atol=1e-5)


def test_erasing_paints_one_gray_rectangle_on_the_drawn_share_and_leaves_the_rest(digits):
    x = to_unit(digits)
    uniforms = augmentation_uniforms(seed=0, epoch=0)[:64]
    plain = Augment(degrees=0, translate=0, scale=0)
    assert torch.equal(augment(x, uniforms, Augment(degrees=0, translate=0, scale=0, erasing=0)), x)
    out = augment(x, uniforms, replace(plain, erasing=0.5))
    changed = out != x
    drawn = uniforms[:, 6] < 0.5
    assert not changed[~drawn].any()  # only the drawn images, and ...
    for image, gray, mask in zip(out[drawn], uniforms[drawn, 11], changed[drawn]):
        rows, cols = mask[0].any(1).nonzero(), mask[0].any(0).nonzero()
        box = image[0, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert torch.allclose(box, gray.expand_as(box))  # ... one rectangle, one gray level
        assert 0.02 * 784 * 0.5 <= box.numel() <= 0.4 * 784 * 1.5
    # An erasing of 0 keeps every earlier run's views; erasing paints over the moved image.
    moved = augment(x, uniforms, Augment())
    assert torch.equal(augment(x, uniforms, replace(Augment(), erasing=0.0)), moved)
    erased = augment(x, uniforms, replace(Augment(), erasing=1.0))
    outside = ~changed[drawn]  # the same rectangles, wherever the image was moved
    assert torch.equal(erased[drawn][outside], moved[drawn][outside])
    assert not torch.equal(erased[drawn], moved[drawn])


def test_cutmix_pastes_a_rectangle_of_the_previous_image_and_returns_each_images_share(digits):
    x = to_unit(digits)
    uniforms = augmentation_uniforms(seed=0, epoch=0)[:64]
    # CutMix's columns come last: every earlier column is drawn as before they existed.
    generator = torch.Generator().manual_seed(0)
    before = torch.cat([torch.rand(60_000, 4, generator=generator) * 2 - 1,
                        torch.rand(60_000, 1, generator=generator),
                        torch.rand(60_000, 1, generator=generator),
                        torch.rand(60_000, 6, generator=generator)], dim=1)
    assert torch.equal(augmentation_uniforms(seed=0, epoch=0)[:, :12], before)
    unchanged, own = cutmix(x, uniforms, 0.0)
    assert torch.equal(unchanged, x) and torch.equal(own, torch.ones(64))
    # Each image a constant gray of its own: its share of the pixels is its share of the label.
    flat = torch.linspace(0.01, 1, 64).view(64, 1, 1, 1).expand(64, 1, 28, 28)
    out, own = cutmix(flat, uniforms, 0.5)
    drawn = uniforms[:, 12] < 0.5
    assert 10 < drawn.sum() < 54 and torch.equal(own[~drawn], torch.ones(int((~drawn).sum())))
    kept = (out == flat).float().mean(dim=(1, 2, 3))
    assert torch.allclose(kept, own)
    neighbour = flat.roll(1, dims=0)
    assert torch.equal((out == neighbour) | (out == flat), torch.ones_like(out, dtype=torch.bool))
    assert own[drawn].min() < 0.5 < own[drawn].max()  # areas drawn across (0, 1)


def test_a_cutmix_batch_has_labels_mixed_by_area_and_validation_stays_clean(data_dir):
    spec = Augment(degrees=0, translate=0, scale=0, cutmix=1.0)
    dm = DataModule(data_dir, batch_size=16, train_size=64, seed=5, augment=spec)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    x, y, positions, _ = dm.model_input(batch, training=True)
    own = cutmix(to_unit(batch[0]), augmentation_uniforms(5, 0)[positions], 1.0)[1]
    assert y.shape == (16, 10) and torch.allclose(y.sum(1), torch.ones(16))
    labels = batch[1]
    for row in range(16):
        assert y[row, labels[row]] >= own[row] - 1e-6  # at least its own share (more if alike)
        if labels[row] != labels[row - 1]:
            assert torch.isclose(y[row, labels[row - 1]], 1 - own[row])
    _, clean_y, _, _ = dm.model_input(batch, training=False)
    assert torch.equal(clean_y, labels)
    assert "CutMix on 100% of images" in str(spec)


def test_an_images_view_depends_only_on_seed_epoch_and_index(digits):
    positions = torch.arange(64)
    whole = prepare(digits, positions, Augment(), seed=3, epoch=2)
    order = torch.randperm(64)
    shuffled = prepare(digits[order], positions[order], Augment(), seed=3, epoch=2)
    assert torch.allclose(whole[order], shuffled, atol=1e-6)
    assert not torch.allclose(whole, prepare(digits, positions, Augment(), seed=3, epoch=3))


def test_index_batches_cover_each_image_once_and_reshuffle_every_epoch():
    sampler = IndexBatches(1000, batch_size=100, shuffle=True, seed=0)
    first = torch.cat([b for _, b in sampler])
    sampler.set_epoch(1)
    second = torch.cat([b for _, b in sampler])
    assert sorted(first.tolist()) == list(range(1000)) == sorted(second.tolist())
    assert not torch.equal(first, second)
    assert torch.equal(first, torch.cat([b for _, b in IndexBatches(1000, 100, True, seed=0)]))


def test_ranks_take_disjoint_shards():
    shards = [torch.cat([b for _, b in IndexBatches(1000, 50, True, seed=0, rank=r, world_size=2)])
              for r in (0, 1)]
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert len(shards[0]) == len(shards[1]) == 500


def test_datamodule_yields_normalized_batches(data_dir):
    dm = DataModule(data_dir, batch_size=32, train_size=256)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    x, y, positions, epoch = dm.on_after_batch_transfer(batch, 0)
    assert x.shape == (32, 1, 28, 28) and y.shape == (32,)
    assert -1 < x.mean() < 1


def test_the_batched_data_path_gives_the_batches_of_the_image_by_image_path(data_dir):
    """The device path (gather by index, augment the batch) against the straightforward one
    (take each image of the epoch's permutation, augment it alone)."""
    dm = DataModule(data_dir, batch_size=16, train_size=64, seed=5)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(3)
    split = dm.train_split
    images, labels, positions = split.images, split.labels, split.positions
    order = torch.randperm(64, generator=torch.Generator().manual_seed(5 * 100_003 + 3 + 1))
    uniforms = augmentation_uniforms(seed=5, epoch=3)
    for step, batch in enumerate(loader):
        x, y, _, epoch = dm.model_input(batch, training=True)
        assert epoch == 3
        for row, i in enumerate(order[step * 16: (step + 1) * 16].tolist()):
            alone = augment(to_unit(images[i: i + 1]), uniforms[positions[i]].unsqueeze(0),
                            dm.augment)
            assert torch.allclose(x[row], (alone[0] - 0.1307) / 0.3081, atol=1e-5)
            assert y[row] == labels[i]


def test_batch_augmentation_stacks_differently_augmented_copies_of_the_batch(data_dir):
    one, two = (DataModule(data_dir, batch_size=16, train_size=64, seed=5, views=views)
                for views in (1, 2))
    for dm in (one, two):
        dm.setup("fit")
    batch = next(iter(one.train_dataloader()))
    x1, y1, p1, _ = one.model_input(batch, training=True)
    x2, y2, p2, _ = two.model_input(batch, training=True)
    assert x2.shape == (32, 1, 28, 28)
    assert torch.equal(x2[:16], x1)  # the first copy is the one-view batch
    assert torch.equal(y2, y1.repeat(2)) and torch.equal(p2, p1.repeat(2))
    assert (x2[16:] - x2[:16]).abs().amax(dim=(1, 2, 3)).min() > 0.1  # every image drawn anew
    clean, _, _, _ = two.model_input(batch, training=False)
    assert clean.shape == (16, 1, 28, 28)  # validation and test see each image once


def test_the_second_view_spans_the_full_ranges_of_a_random_magnitude_augmentation(data_dir):
    spec = Augment(random_magnitude=True).scaled(2)
    dm = DataModule(data_dir, batch_size=16, train_size=64, seed=5, augment=spec, views=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    x, _, positions, _ = dm.model_input(batch, training=True)
    images = to_unit(batch[0])
    for view, view_spec in enumerate((spec, spec.at_full_range)):
        uniforms = augmentation_uniforms(5, 0, view=view)[positions[:16]]
        expected = normalize(augment(images, uniforms, view_spec))
        assert torch.allclose(x[16 * view: 16 * (view + 1)], expected, atol=1e-6)
    # Across the full ranges, the second copies move further from the clean digits.
    clean = normalize(images)
    assert (x[16:] - clean).abs().mean() > 1.3 * (x[:16] - clean).abs().mean()
