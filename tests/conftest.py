"""Shared fixtures: the real assets (weights, flower photos) and small image folders.

The assets are found through ``KERAS_TRANSFER_ASSETS`` (default ``../shared/assets``
next to the project root). A missing asset folder fails the test run instead of
skipping it: a green run must mean the real-weights tests ran.
"""

import os
import pathlib

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
ASSETS_ENV = "KERAS_TRANSFER_ASSETS"
FLOWER_CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")


def assets_path():
    return pathlib.Path(
        os.environ.get(ASSETS_ENV, PROJECT_ROOT.parent / "shared" / "assets")
    ).resolve()


@pytest.fixture(scope="session")
def assets_dir():
    path = assets_path()
    if not (path / "weights").is_dir() or not (path / "data" / "flower_photos").is_dir():
        pytest.fail(
            f"Real test assets not found at {path}. Set {ASSETS_ENV} to the "
            "folder holding weights/ and data/flower_photos/."
        )
    return path


@pytest.fixture(scope="session")
def weights_dir(assets_dir):
    return assets_dir / "weights"


@pytest.fixture(scope="session")
def flower_photos_dir(assets_dir):
    return assets_dir / "data" / "flower_photos"


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty, private KERAS_HOME (nothing cached)."""
    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def seeded_keras_home(keras_home, weights_dir):
    """A KERAS_HOME whose models/ cache holds the real ImageNet weights."""
    for f in weights_dir.glob("*.h5"):
        os.symlink(f, keras_home / "models" / f.name)
    return keras_home


def write_image_folder(root, classes=("cats", "dogs"), per_class=6, size=(40, 48), seed=0):
    """Writes a folder-per-class tree of small random JPEGs; returns its path."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = pathlib.Path(root)
    for c_index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            # Class-dependent mean colour so that a model can learn something.
            base = np.full((*size, 3), 40 + 60 * c_index, dtype=np.float32)
            pixels = np.clip(base + rng.normal(0, 30, (*size, 3)), 0, 255)
            Image.fromarray(pixels.astype("uint8")).save(folder / f"img_{i}.jpg")
    return root


@pytest.fixture
def image_folder(tmp_path):
    return write_image_folder(tmp_path / "images")


def copy_flower_subset(src, dst, per_class, classes=FLOWER_CLASSES):
    """Copies the first ``per_class`` real photos of each class (tests only, tmp dirs)."""
    dst = pathlib.Path(dst)
    for name in classes:
        files = sorted((pathlib.Path(src) / name).glob("*.jpg"))[:per_class]
        (dst / name).mkdir(parents=True, exist_ok=True)
        for f in files:
            os.symlink(f, dst / name / f.name)
    return dst


@pytest.fixture
def flower_subset(tmp_path, flower_photos_dir):
    """Factory: a folder of symlinks to a few real flower photos per class."""

    def make(per_class=8, classes=FLOWER_CLASSES):
        return copy_flower_subset(
            flower_photos_dir, tmp_path / f"flowers_{per_class}", per_class, classes
        )

    return make
