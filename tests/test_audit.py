"""`keras_transfer.audit` and `keras-transfer audit`: label errors, duplicates, outliers.

On a tiny folder of real flower photos (3 classes x 12, real ImageNet weights,
128 px) into which a rose is put among the daisies and a sunflower among the
roses, an exact copy and a
shrunk, recompressed copy of a photo are added, with a seed whose
train/validation split puts each copy on the other side from its original.
"""

import csv
import os
import re
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from keras_transfer import cli
from keras_transfer import defaults
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import DataError
from tests.conftest import copy_flower_subset
from tests.conftest import write_image_folder

pytest.importorskip("cleanlab")

# The weights of the audit's default backbones, in their order.
WEIGHTS = (
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5",
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
    "mobilenet_2_5_224_tf_no_top.h5",
)
CLASSES = ("daisy", "roses", "sunflowers")
OPTIONS = {"image_size": 128, "folds": 4, "validation_split": 0.2}


def _split_seed(folder, original, copies):
    """A seed whose split puts each of `copies` on the other side from `original`."""
    from keras_transfer.data import scan_image_folder
    from keras_transfer.data.split import stratified_split

    info = scan_image_folder(folder)
    for seed in range(1000):
        _, val = stratified_split(info, OPTIONS["validation_split"], seed)
        held_out = {path for path, _ in val}
        if all((str(original) in held_out) != (str(c) in held_out) for c in copies):
            return seed
    raise AssertionError("no seed splits the copies from the original")


@pytest.fixture(scope="module")
def planted(tmp_path_factory, assets_dir):
    """The folder, its planted problems and the seed."""
    root = tmp_path_factory.mktemp("audit")
    photos = assets_dir / "data" / "flower_photos"
    folder = copy_flower_subset(photos, root / "photos", 12, CLASSES)
    rose = sorted((photos / "roses").glob("*.jpg"))[20]
    flipped = folder / "daisy" / "zz_flipped.jpg"
    os.symlink(rose, flipped)
    sunflower = sorted((photos / "sunflowers").glob("*.jpg"))[20]
    flipped_too = folder / "roses" / "zz_flipped.jpg"
    os.symlink(sunflower, flipped_too)
    original = sorted((folder / "sunflowers").glob("*.jpg"))[0]
    exact = folder / "sunflowers" / "zz_exact.jpg"
    shutil.copyfile(original, exact)
    with Image.open(original) as image:
        image.convert("RGB").resize((image.width // 2, image.height // 2)).save(
            folder / "sunflowers" / "zz_near.jpg", quality=60
        )
    near = folder / "sunflowers" / "zz_near.jpg"
    seed = _split_seed(folder, original, [exact, near])
    return {
        "folder": folder,
        "flipped": str(flipped),
        "flipped_too": str(flipped_too),
        "original": str(original),
        "exact": str(exact),
        "near": str(near),
        "seed": seed,
        "weights": [str(assets_dir / "weights" / name) for name in WEIGHTS],
    }


@pytest.fixture(scope="module")
def audit(planted):
    from keras_transfer.audit import audit_folder

    return audit_folder(
        planted["folder"], weights=planted["weights"], seed=planted["seed"], verbose=0, **OPTIONS
    )


def test_flipped_labels_ranked_first(audit, planted):
    top = {(x.path, x.given, x.suggested) for x in audit.label_issues[:2]}
    assert top == {
        (planted["flipped"], "daisy", "roses"),
        (planted["flipped_too"], "roses", "sunflowers"),
    }
    scores = [issue.score for issue in audit.label_issues]
    assert scores == sorted(scores)


def test_duplicates_across_the_split(audit, planted):
    pairs = {frozenset((d.path_a, d.path_b)): d for d in audit.duplicates}
    exact = pairs[frozenset((planted["original"], planted["exact"]))]
    near = pairs[frozenset((planted["original"], planted["near"]))]
    assert exact.exact and exact.across_split and not exact.across_classes
    assert (
        not near.exact
        and near.across_split
        and near.similarity >= defaults.NEAR_DUPLICATE_THRESHOLD
    )
    # Distinct photos are not near duplicates: only the planted trio pairs up.
    planted_paths = {planted["original"], planted["exact"], planted["near"]}
    assert all({d.path_a, d.path_b} <= planted_paths for d in audit.duplicates)
    # Leakage first.
    assert audit.duplicates[0].across_split


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_writes_csv_and_self_contained_page(planted, tmp_path):
    out = tmp_path / "out"
    argv = ["audit", planted["folder"], "--output-dir", out]
    for weights in planted["weights"]:
        argv += ["--weights", weights]
    argv += ["--image-size", "128", "--folds", "4", "--seed", planted["seed"]]
    assert cli.main(argv) == 0
    with open(out / "label_issues.csv") as f:
        assert f.readline().strip() == "path,given,suggested,score"
    first_two = {row["path"] for row in _rows(out / "label_issues.csv")[:2]}
    assert first_two == {planted["flipped"], planted["flipped_too"]}
    duplicates = _rows(out / "duplicates.csv")
    assert list(duplicates[0]) == [
        "path_a", "path_b", "class_a", "class_b", "similarity", "exact",
        "across_classes", "across_split",
    ]  # fmt: skip
    assert {planted["exact"], planted["near"]} <= {r["path_b"] for r in duplicates}
    outliers = _rows(out / "outliers.csv")
    assert len(outliers) == 1  # 1 % of 42 images, at least one
    assert list(outliers[0]) == ["path", "given", "score"]
    page = (out / "audit.html").read_text()
    thumbnails = re.findall(r'<img src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', page)
    # The flipped photos, three duplicate pairs, the outlier.
    assert len(thumbnails) >= 2 + 2 * 3 + 1
    linked = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(linked) == len(thumbnails)
    assert all(value.startswith("data:image/jpeg;base64,") for value in linked)
    assert "://" not in re.sub(r"data:image/jpeg;base64,[A-Za-z0-9+/=]+", "", page)
    assert "<script" not in page and "<link" not in page


def test_too_few_images_per_class_for_the_folds(planted):
    from keras_transfer.audit import audit_folder

    with pytest.raises(
        DataError, match=r"15-fold .* 'daisy' has 13, 'roses' has 13, 'sunflowers' has 14.*--folds"
    ):
        audit_folder(planted["folder"], weights=planted["weights"], folds=15, verbose=0)


def test_single_class_and_wrong_layout(tmp_path):
    from keras_transfer.audit import audit_folder

    one = write_image_folder(tmp_path / "one", classes=("cats",))
    with pytest.raises(DataError, match="class"):
        audit_folder(one, weights=None, verbose=0)
    loose = tmp_path / "loose"
    write_image_folder(loose / "x", per_class=2)
    for f in (loose / "x").rglob("*.jpg"):
        f.rename(loose / f.name)
    shutil.rmtree(loose / "x")
    assert cli.main(["audit", loose, "--output-dir", tmp_path / "o"]) == 2
    assert cli.main(["audit", tmp_path / "missing", "--output-dir", tmp_path / "o"]) == 2


def test_missing_cleanlab_names_the_extra(monkeypatch, image_folder, capsys):
    from keras_transfer.audit.folder_audit import require_audit_dependencies

    monkeypatch.setitem(sys.modules, "cleanlab", None)
    with pytest.raises(ConfigurationError, match=r"pip install keras-transfer\[audit\]"):
        require_audit_dependencies()
    assert cli.main(["audit", image_folder, "--output-dir", image_folder / "out"]) == 2
    assert "keras-transfer[audit]" in capsys.readouterr().err


def test_label_issue_ranking_fails_without_out_of_fold(audit):
    """The probabilities are out-of-fold: each row sums to 1 and the given
    label of the flipped photo got a low probability."""
    assert np.allclose(audit.probabilities.sum(axis=1), 1, atol=1e-6)
    assert audit.label_issues[0].score < 0.5


def test_default_backbones_side_by_side(audit, planted):
    """The audit reads the three default backbones' features side by side
    (1,280 + 1,280 + 256), each of unit length."""
    assert defaults.AUDIT_BACKBONES == ("mobilenet_v2_050", "mobilenet_v2_035", "mobilenet_v1_025")
    assert audit.features.shape == (len(audit.paths), 1280 + 1280 + 256)
    for block in np.split(audit.features, [1280, 2560], axis=1):
        assert np.allclose(np.linalg.norm(block, axis=1), 1, atol=1e-5)
    from keras_transfer.audit.label_issues import out_of_fold_probabilities

    first_only, _ = out_of_fold_probabilities(
        audit.features[:, :1280], audit.labels, 4, planted["seed"]
    )
    assert not np.allclose(audit.probabilities, first_only, atol=1e-3)


def test_concatenated_features_weigh_each_backbone_alike():
    from keras_transfer.audit.features import concatenate_features

    rng = np.random.default_rng(0)
    small, large = rng.random((4, 3)), 1000 * rng.random((4, 5))
    features = concatenate_features([small, large])
    assert features.shape == (4, 8)
    assert np.allclose(np.linalg.norm(features[:, :3], axis=1), 1)
    assert np.allclose(np.linalg.norm(features[:, 3:], axis=1), 1)
    # The direction of each block is kept.
    assert np.allclose(features[:, 3:] * np.linalg.norm(large, axis=1, keepdims=True), large)


def test_one_weights_file_for_several_backbones(planted, tmp_path, capsys):
    from keras_transfer.audit import audit_folder

    with pytest.raises(ConfigurationError, match=r"one weights entry per backbone: 3 backbones"):
        audit_folder(planted["folder"], weights=planted["weights"][0], verbose=0, **OPTIONS)
    argv = ["audit", planted["folder"], "--output-dir", tmp_path / "o"]
    argv += ["--weights", planted["weights"][0], "--weights", planted["weights"][1]]
    assert cli.main(argv) == 2
    assert "one per --backbone" in capsys.readouterr().err


def test_missing_weights_stop_the_audit_before_any_pass(planted, keras_home, monkeypatch):
    """Offline, with the first backbone's weights cached and the second's
    not: a WeightsError that names the missing file, before the first
    backbone's minutes of work."""
    from keras_transfer.audit import audit_folder
    from keras_transfer.backbones import weights as weights_lib
    from keras_transfer.errors import WeightsError

    monkeypatch.setattr(weights_lib, "reachable", lambda *args, **kwargs: False)
    os.symlink(planted["weights"][0], keras_home / "models" / WEIGHTS[0])

    def no_pass(*args, **kwargs):
        raise AssertionError("a feature pass started before all the weights were found")

    monkeypatch.setattr("keras_transfer.data.loading.image_dataset", no_pass)
    with pytest.raises(WeightsError, match=re.escape(WEIGHTS[1])):
        audit_folder(planted["folder"], weights="imagenet", verbose=0, **OPTIONS)


def test_second_round_gives_the_flipped_labels_lower_probabilities():
    """The second round down-weights in training the images the first round
    doubted: the flipped labels pull its classifier less, so it gives them
    a lower out-of-fold probability than one round does, and more of them
    rank first. Seen failing with `REWEIGHT_POWER = 0` (every weight 1)."""
    from keras_transfer.audit.label_issues import C_GRID
    from keras_transfer.audit.label_issues import REWEIGHTED_C_GRID
    from keras_transfer.audit.label_issues import out_of_fold_probabilities

    rng = np.random.default_rng(0)
    classes, per_class, dims = 3, 120, 20
    centres = rng.normal(size=(classes, dims))
    labels = np.repeat(np.arange(classes), per_class)
    features = centres[labels] + 1.2 * rng.normal(size=(len(labels), dims))
    flipped = rng.choice(len(labels), 36, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, len(flipped))) % classes
    rows = np.arange(len(labels))

    one, c_one = out_of_fold_probabilities(features, noisy, 5, 0, reweight=False)
    two, c_two = out_of_fold_probabilities(features, noisy, 5, 0)
    assert c_one in C_GRID and c_two in REWEIGHTED_C_GRID
    assert np.allclose(two.sum(axis=1), 1)
    given_one, given_two = one[rows, noisy], two[rows, noisy]
    assert given_two[flipped].mean() < 0.9 * given_one[flipped].mean()
    k = len(flipped)
    hits = [len(set(np.argsort(g)[:k]) & set(flipped.tolist())) for g in (given_one, given_two)]
    assert hits[1] >= hits[0]
