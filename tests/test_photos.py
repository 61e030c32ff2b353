"""Photos as people have them, end to end: the scan, `train`, `evaluate`, `predict`.

One folder holds every kind of file the decoder handles or refuses (turned
phone photos, WebP, TIFF, 16-bit PNG, HEIC, CMYK and grayscale JPEGs, a
transparent palette PNG, a PNG named .jpg, and zero-byte, truncated, text
and 20,000 x 20,000 files): every file is either used or named with its
reason. The `resize` a model was trained with travels in its file, so
`predict` and `evaluate` resize the same way.
"""

import json
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image
from test_cli import _run
from test_images import _bomb_png
from test_images import _exif
from test_predict import small_classifier

import keras_transfer
from keras_transfer import data
from keras_transfer.data import loading
from keras_transfer.evaluation import predict_images
from keras_transfer.layers import resize_of
from keras_transfer.portable import read_metadata
from keras_transfer.portable import save_model


def _photo(seed, size=(48, 64), base=0):
    """A smooth, asymmetric picture; `base` moves its colour (one class per base)."""
    rng = np.random.default_rng(seed)
    y, x = np.indices(size) / max(size)
    pixels = np.stack([255 * x, 255 * y, np.full(size, 128.0)], axis=-1) * 0.5 + base
    pixels[: size[0] // 3, : size[1] // 3] = rng.integers(0, 256, 3)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _sideways(image, orientation):
    """`image` stored as a phone stores it: pixels turned, the tag saying how to undo it."""
    undo = {
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,
        8: Image.Transpose.ROTATE_270,
    }
    return image.transpose(undo[orientation]), _exif(orientation)


def _every_kind(root, base):
    """Usable files of every kind in `root`; returns their names."""
    root.mkdir(parents=True)
    for orientation in (3, 6, 8):
        pixels, exif = _sideways(_photo(orientation, base=base), orientation)
        pixels.save(root / f"phone_{orientation}.jpg", exif=exif)
    _photo(1, base=base).save(root / "browser.webp")
    _photo(2, base=base).save(root / "scanner.tiff")
    Image.fromarray(np.asarray(_photo(3, base=base).convert("L"), np.uint16) * 257).save(
        root / "deep.png"
    )
    _photo(4, base=base).convert("CMYK").save(root / "print.jpg")
    _photo(5, base=base).convert("L").save(root / "gray.jpg")
    _photo(6, base=base).convert("P").save(root / "palette.png", transparency=0)
    _photo(7, base=base).save(root / "really_png.jpg", format="PNG")
    if _has_pillow_heif():
        import pillow_heif

        image = _photo(8, base=base)
        pillow_heif.from_pillow(image).save(root / "iphone.heic")
    return sorted(p.name for p in root.iterdir())


def _has_pillow_heif():
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return False
    return True


def _bad_files(folder):
    """One of each file that cannot be used, and the words of its reason."""
    (folder / "empty.jpg").write_bytes(b"")
    good = (folder / "gray.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "notes.jpg").write_text("not a photo")
    _bomb_png(folder / "bomb.png")
    return {
        "empty.jpg": "empty file",
        "truncated.jpg": "truncated",
        "notes.jpg": "not an image",
        "bomb.png": "too large",
    }


def test_every_kind_of_photo_trains_and_evaluates_and_every_file_is_used_or_named(tmp_path, capsys):
    root = tmp_path / "photos"
    used = {name: _every_kind(root / name, base) for name, base in (("cats", 0), ("dogs", 120))}
    bad = _bad_files(root / "cats")
    model_path = tmp_path / "m.keras"

    status, out, err = _run(
        capsys, "train", root, "--backbone", "mobilenet_v1_025", "--weights", "none",
        "--image-size", 32, "--epochs", 1, "--fine-tune-epochs", 0, "--batch-size", 8,
        "--validation-split", 0, "--resize", "crop", "--output", model_path,
    )  # fmt: skip
    assert status == 0, err
    [warning] = [line for line in err.splitlines() if "Skipping" in line]
    assert f"Skipping {len(bad)} image files" in warning
    for name, reason in bad.items():
        assert f"{name} ({reason}" in warning, warning
    total = sum(len(names) for names in used.values())
    assert f"Found {total} images belonging to 2 classes" in out
    assert read_metadata(model_path)["resize"] == "crop"

    status, out, err = _run(capsys, "evaluate", model_path, root, "--output-dir", tmp_path)
    assert status == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_images"] == total
    assert all(name in err for name in bad)


def test_a_photo_and_its_exif_turned_copy_get_the_same_prediction(tmp_path, capsys):
    model = small_classifier(size=32)
    model.save(tmp_path / "m.keras")
    upright, turned = tmp_path / "upright", tmp_path / "turned"
    for folder in (upright, turned):
        for name in ("cats", "dogs"):
            (folder / name).mkdir(parents=True)
    for index, orientation in enumerate((3, 6, 8, 3, 6, 8)):
        name = ("cats", "dogs")[index % 2]
        image = _photo(index, size=(40, 56), base=60 * (index % 2))
        image.save(upright / name / f"{index}.png")
        pixels, exif = _sideways(image, orientation)
        pixels.save(turned / name / f"{index}.png", exif=exif)

    predicted = {}
    for folder in (upright, turned):
        result = predict_images(model, [folder], top_k=2)
        predicted[folder] = [image.top for image in result.images]
    # The same pixels reach the model: the same classes and probabilities.
    for a, b in zip(predicted[upright], predicted[turned]):
        assert [c for c, _, _ in a] == [c for c, _, _ in b]
        np.testing.assert_allclose([p for _, _, p in a], [p for _, _, p in b], atol=1e-6)

    matrices = []
    for folder in (upright, turned):
        out_dir = tmp_path / f"evaluation_{folder.name}"
        status, _, err = _run(
            capsys, "evaluate", tmp_path / "m.keras", folder, "--output-dir", out_dir
        )
        assert status == 0, err
        metrics = json.loads((out_dir / "metrics.json").read_text())
        matrices.append(metrics["confusion_matrix"])
    assert matrices[0] == matrices[1]

    rows = []
    for folder in (upright, turned):
        status, out, err = _run(capsys, "predict", tmp_path / "m.keras", folder)
        assert status == 0, err
        # The classes and probabilities, less the path column.
        rows.append([line.split()[1:] for line in out.splitlines()[1:] if line.strip()])
    assert len(rows[0]) == 6 and rows[0] == rows[1]


def test_resize_is_stored_in_the_model_file(tmp_path):
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035", 2, input_shape=(32, 32, 3), weights=None, resize="pad"
    )
    assert resize_of(model) == "pad"
    model.save(tmp_path / "m.keras")
    assert read_metadata(tmp_path / "m.keras")["resize"] == "pad"
    assert resize_of(keras_transfer.load_model(tmp_path / "m.keras")) == "pad"
    # Plain Keras loads it too (the model is made of Keras' own layers).
    keras.models.load_model(tmp_path / "m.keras")


def test_an_older_model_file_without_resize_means_stretch(tmp_path):
    save_model(small_classifier(), tmp_path / "old.keras")
    # As files saved before `resize` existed: the entry does not have it.
    with zipfile.ZipFile(tmp_path / "old.keras") as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    metadata = json.loads(entries["keras_transfer.json"])
    del metadata["resize"]
    entries["keras_transfer.json"] = json.dumps(metadata).encode()
    with zipfile.ZipFile(tmp_path / "older.keras", "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    assert resize_of(keras_transfer.load_model(tmp_path / "older.keras")) == "stretch"


@pytest.mark.parametrize("stored, asked, used", [("crop", None, "crop"), ("crop", "pad", "pad")])
def test_predict_resizes_as_the_model_was_trained_unless_told(
    tmp_path, monkeypatch, stored, asked, used
):
    _photo(0).save(tmp_path / "a.png")
    model = small_classifier()
    model.resize = stored
    seen = []
    image_dataset = loading.image_dataset

    def spy(*args, resize, **kwargs):
        seen.append(resize)
        return image_dataset(*args, resize=resize, **kwargs)

    monkeypatch.setattr(loading, "image_dataset", spy)
    predict_images(model, [tmp_path / "a.png"], resize=asked)
    assert seen == [used]


def test_crop_pixels_differ_from_stretch_through_the_pipeline(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _photo(0, size=(20, 60)).save(tmp_path / name / "wide.png")
    pixels = {}
    for mode in ("stretch", "crop", "pad"):
        ds, _, _ = data.load_image_folder(
            tmp_path, 16, validation_split=0, shuffle=False, verbose=False, resize=mode
        )
        pixels[mode] = next(iter(ds))[0].numpy()[0]
    assert not np.array_equal(pixels["stretch"], pixels["crop"])
    # pad: a 60x20 picture in a 16x16 square leaves black bands above and below.
    assert pixels["pad"][:5].max() == 0 and pixels["pad"][-5:].max() == 0


def test_corrupt_exif_is_named_in_one_warning_and_the_photo_still_loads(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _photo(0).save(tmp_path / name / "fine.jpg")
    corrupt = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\x01\x12garbage"
    _photo(1).save(tmp_path / "a" / "bad_exif.jpg", exif=corrupt)
    with pytest.warns(UserWarning, match=r"bad_exif.jpg \(corrupt EXIF") as record:
        info = data.scan_image_folder(tmp_path)
    assert info.class_counts == {"a": 2, "b": 1}
    ours = [w for w in record if "bad_exif" in str(w.message)]
    assert len(ours) == 1
