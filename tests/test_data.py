import os
import warnings

import numpy as np
import pytest
from conftest import FLOWER_CLASSES
from conftest import write_image_folder
from PIL import Image

from keras_transfer import data
from keras_transfer.data import decoding
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import DataError


def _labels_by_path(dataset):
    # Matches paths to labels only for unshuffled datasets (validation, or
    # training with shuffle=False), as with Keras' `file_paths`.
    labels = np.concatenate([y.numpy() for _, y in dataset])
    return dict(zip(dataset.file_paths, labels.tolist()))


def _write(path, pixels, **save_kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save_kwargs)


# --- folder checks ---------------------------------------------------------


def test_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="not found") as e:
        data.load_image_folder(missing, 32)
    assert str(missing) in str(e.value)


def test_file_instead_of_folder(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match="got a file") as e:
        data.load_image_folder(path, 32)
    assert str(path) in str(e.value)


def test_images_directly_in_root_explain_the_layout(tmp_path):
    for i in range(3):
        _write(tmp_path / f"img_{i}.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="3 images directly in it") as e:
        data.load_image_folder(tmp_path, 32)
    assert "own subfolder" in str(e.value)
    assert os.path.join(str(tmp_path), "<class>", "<image>") in str(e.value)


def test_single_class(tmp_path):
    write_image_folder(tmp_path, classes=("cats",), per_class=2)
    with pytest.raises(DataError, match="single class.*'cats'"):
        data.load_image_folder(tmp_path, 32)


def test_class_without_images_is_named(tmp_path):
    write_image_folder(tmp_path, classes=("cats", "dogs"), per_class=2)
    (tmp_path / "birds").mkdir()
    (tmp_path / "birds" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="without images.*'birds'"):
        data.load_image_folder(tmp_path, 32)


def test_hidden_and_non_image_files_are_ignored_silently(tmp_path):
    write_image_folder(tmp_path, classes=("cats", "dogs"), per_class=3)
    (tmp_path / "cats" / "readme.txt").write_text("text")
    (tmp_path / "cats" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "cats" / "._img_0.jpg").write_bytes(b"\0\5\26\7")  # macOS AppleDouble
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / "__MACOSX" / "cats").mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = data.scan_image_folder(tmp_path)
    assert info.class_names == ("cats", "dogs")
    assert info.class_counts == {"cats": 3, "dogs": 3}


def test_images_in_nested_folders_belong_to_their_class(tmp_path):
    write_image_folder(tmp_path, classes=("cats", "dogs"), per_class=2)
    _write(tmp_path / "cats" / "2024" / "extra.png", np.zeros((8, 8, 3), np.uint8))
    assert data.scan_image_folder(tmp_path).class_counts == {"cats": 3, "dogs": 2}


def test_loose_images_next_to_class_folders_are_ignored_with_a_warning(tmp_path):
    write_image_folder(tmp_path, classes=("cats", "dogs"), per_class=2)
    _write(tmp_path / "stray.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.warns(UserWarning, match=r"Ignoring 1 image.*stray\.png"):
        info = data.scan_image_folder(tmp_path)
    assert info.num_images == 4


# --- unreadable files ------------------------------------------------------


def test_corrupt_and_truncated_files_are_skipped_with_one_warning(tmp_path):
    write_image_folder(tmp_path, classes=("cats", "dogs"), per_class=4)
    good = (tmp_path / "cats" / "img_0.jpg").read_bytes()
    (tmp_path / "cats" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "dogs" / "not_an_image.jpg").write_text("hello")
    (tmp_path / "dogs" / "empty.png").write_bytes(b"")

    with pytest.warns(UserWarning) as record:
        train_ds, val_ds, _ = data.load_image_folder(
            tmp_path, 16, batch_size=4, validation_split=0.25, verbose=False
        )
    messages = [str(w.message) for w in record if "Skipping" in str(w.message)]
    assert len(messages) == 1
    for name in ("truncated.jpg", "not_an_image.jpg", "empty.png"):
        assert name in messages[0]
    used = {os.path.basename(p) for p in train_ds.file_paths + val_ds.file_paths}
    assert used == {f"img_{i}.jpg" for i in range(4)}
    assert len(train_ds.file_paths + val_ds.file_paths) == 8
    # Every epoch runs to the end: nothing unreadable reaches the pipeline.
    for _ in range(2):
        assert sum(int(x.shape[0]) for x, _ in train_ds) == 6


def test_class_whose_images_are_all_unreadable(tmp_path):
    write_image_folder(tmp_path, classes=("cats", "dogs"), per_class=2)
    (tmp_path / "birds").mkdir()
    (tmp_path / "birds" / "a.jpg").write_text("not a jpeg")
    with pytest.raises(DataError, match="all fail to decode: 'birds'"):
        data.scan_image_folder(tmp_path)


def test_scan_is_remembered_until_a_file_changes(tmp_path, monkeypatch):
    write_image_folder(tmp_path, classes=("cats", "dogs"), per_class=2)
    data.scan_image_folder(tmp_path)

    def fail(paths):
        raise AssertionError(f"decoded again: {paths}")

    monkeypatch.setattr(decoding, "check_decodable", fail)
    assert data.scan_image_folder(tmp_path).num_images == 4  # no decode

    monkeypatch.undo()
    target = tmp_path / "dogs" / "img_1.jpg"
    target.write_text("overwritten with text")
    with pytest.warns(UserWarning, match="img_1.jpg"):
        info = data.scan_image_folder(tmp_path)
    assert info.class_counts == {"cats": 2, "dogs": 1}


# --- pixels ----------------------------------------------------------------


def test_grayscale_rgba_palette_png_bmp_gif_load_as_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    image.convert("L").save(tmp_path / "a" / "gray.jpg")
    image.convert("RGBA").save(tmp_path / "a" / "rgba.png")
    image.convert("LA").save(tmp_path / "a" / "gray_alpha.png")
    image.convert("P").save(tmp_path / "b" / "palette.png")
    image.save(tmp_path / "b" / "rgb.bmp")
    image.save(tmp_path / "b" / "anim.gif", save_all=True, append_images=[image.rotate(90)])
    image.save(tmp_path / "b" / "upper.JPG")

    train_ds, val_ds, _ = data.load_image_folder(
        tmp_path, (12, 16), batch_size=8, validation_split=0, verbose=False
    )
    assert val_ds is None
    images, labels = next(iter(train_ds))
    assert images.shape == (7, 12, 16, 3)
    assert images.dtype == "float32" and labels.dtype == "int32"
    assert float(images.numpy().max()) > 1.0  # raw [0, 255], not rescaled
    assert 0.0 <= float(images.numpy().min())


def test_pixels_are_raw_rgb_values(tmp_path):
    colour = np.array([200, 30, 90], np.uint8)
    for name in ("a", "b"):
        _write(tmp_path / name / "x.png", np.broadcast_to(colour, (10, 10, 3)).copy())
    for cache in (True, False):
        train_ds, _, _ = data.load_image_folder(
            tmp_path, 4, validation_split=0, cache=cache, verbose=False
        )
        images, _ = next(iter(train_ds))
        np.testing.assert_array_equal(images.numpy()[0, 0, 0], [200.0, 30.0, 90.0])


# --- split and labels ------------------------------------------------------


def test_labels_follow_sorted_class_names(tmp_path):
    classes = ("zebra", "Apple", "c10", "c9")
    write_image_folder(tmp_path, classes=classes, per_class=2, size=(8, 8))
    train_ds, _, class_names = data.load_image_folder(
        tmp_path, 8, validation_split=0, shuffle=False, verbose=False
    )
    assert class_names == sorted(classes) == ["Apple", "c10", "c9", "zebra"]
    assert train_ds.class_names == class_names
    for path, label in _labels_by_path(train_ds).items():
        assert os.path.basename(os.path.dirname(path)) == class_names[label]


def test_split_is_stratified_disjoint_and_deterministic(tmp_path):
    write_image_folder(tmp_path, classes=("a", "b", "c"), per_class=10, size=(8, 8))
    _write(tmp_path / "d" / "only.png", np.zeros((8, 8, 3), np.uint8))

    def split(seed, shuffle=False):
        return data.load_image_folder(
            tmp_path,
            8,
            batch_size=7,
            validation_split=0.3,
            seed=seed,
            shuffle=shuffle,
            verbose=False,
        )

    train_ds, val_ds, names = split(7)
    val = _labels_by_path(val_ds)
    train = _labels_by_path(train_ds)
    assert not set(val) & set(train)
    assert len(val) + len(train) == 31
    # 3 of each 10 per class; the one-image class stays in training.
    assert sorted(np.bincount(list(val.values()), minlength=4)) == [0, 3, 3, 3]
    assert names[3] == "d" and 3 in train.values()

    again_train, again_val, _ = split(7)
    assert again_val.file_paths == val_ds.file_paths
    assert again_train.file_paths == train_ds.file_paths
    shuffled_train, shuffled_val, _ = split(7, shuffle=True)
    assert shuffled_val.file_paths == val_ds.file_paths
    assert set(shuffled_train.file_paths) == set(train_ds.file_paths)
    _, other_val, _ = split(8)
    assert set(other_val.file_paths) != set(val_ds.file_paths)


def test_small_split_keeps_one_validation_image_per_class(tmp_path):
    write_image_folder(tmp_path, classes=("a", "b"), per_class=3, size=(8, 8))
    _, val_ds, _ = data.load_image_folder(tmp_path, 8, validation_split=0.01, verbose=False)
    assert sorted(_labels_by_path(val_ds).values()) == [0, 1]


def test_split_with_no_room_for_validation(tmp_path):
    write_image_folder(tmp_path, classes=("a", "b"), per_class=1, size=(8, 8))
    with pytest.raises(DataError, match="validation_split=0"):
        data.load_image_folder(tmp_path, 8, validation_split=0.2, verbose=False)
    train_ds, val_ds, _ = data.load_image_folder(tmp_path, 8, validation_split=0, verbose=False)
    assert val_ds is None and len(train_ds.file_paths) == 2


def test_training_order_is_reshuffled_each_epoch(tmp_path):
    write_image_folder(tmp_path, classes=("a", "b"), per_class=12, size=(8, 8))
    train_ds, _, _ = data.load_image_folder(
        tmp_path, 8, batch_size=24, validation_split=0, verbose=False
    )
    first, second = (next(iter(train_ds))[1].numpy().tolist() for _ in range(2))
    assert sorted(first) == sorted(second) == [0] * 12 + [1] * 12
    assert first != second


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 0}, "image_size"),
        ({"image_size": (32, 32, 3)}, "image_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"validation_split": 1.0}, "validation_split"),
        ({"validation_split": -0.1}, "validation_split"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_invalid_arguments(image_folder, kwargs, match):
    kwargs = {"image_size": 32, **kwargs}
    with pytest.raises(ConfigurationError, match=match):
        data.load_image_folder(image_folder, **kwargs)


def test_real_flower_photos(flower_subset):
    folder = flower_subset(per_class=3)
    train_ds, val_ds, class_names = data.load_image_folder(
        folder, 48, batch_size=4, validation_split=0.34, verbose=False
    )
    assert class_names == list(FLOWER_CLASSES)
    assert len(val_ds.file_paths) == 5 and len(train_ds.file_paths) == 10
    images, labels = next(iter(val_ds))
    assert images.shape == (4, 48, 48, 3)
    for path, label in _labels_by_path(val_ds).items():
        assert os.path.basename(os.path.dirname(path)) == class_names[label]
