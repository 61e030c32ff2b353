"""`report.html` of `keras-transfer evaluate` (and `--tta`), rendered in headless Chromium.

The page must be self-contained (no network, no script), show the scores,
the confusion matrix, the most confused pairs and the top losses with their
heatmaps, and render in a real browser without a console message. The
renderer check itself is shown to fail on a page that throws and on a blank
page.
"""

import base64
import io
import json
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import write_image_folder
from PIL import Image
from test_cli import _run
from test_predict import saved_classifier

from keras_transfer.evaluation import evaluate
from keras_transfer.utils import html_page
from keras_transfer.evaluation import load_classifier
from keras_transfer.data import load_image_folder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(page, tmp_path, screenshot=True):
    """`(dom, console messages, screenshot pixels or None)` of `page` in headless Chromium."""
    if CHROMIUM is None:
        pytest.fail(
            "Chromium is needed to render report.html: install Debian's 'chromium' "
            "(apt-get install -y chromium), as .ci/run does."
        )
    url = pathlib.Path(page).resolve().as_uri()
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    dom = subprocess.run(
        [*common, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    if not screenshot:
        return dom.stdout, console, None
    shot = tmp_path / "screenshot.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1200,1600", url],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype="int16")
    return dom.stdout, console, pixels


def inked(pixels):
    """The fraction of the screenshot that is not background white."""
    return float((np.abs(pixels - 255).sum(axis=-1) > 30).mean())


def test_the_renderer_check_fails_on_a_throwing_or_blank_page(tmp_path):
    throwing = tmp_path / "throwing.html"
    throwing.write_text("<html><body><p>text</p><script>throw new Error('boom')</script>")
    _, console, _ = render(throwing, tmp_path, screenshot=False)
    assert any("boom" in line for line in console), console
    # Our pages forbid scripts: one put in is refused, and that shows too.
    blocked = tmp_path / "blocked.html"
    blocked.write_text(html_page.page_html("t", ["<script>1</script>"]))
    _, console, _ = render(blocked, tmp_path, screenshot=False)
    assert any("Content Security Policy" in line for line in console), console
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")
    _, _, pixels = render(blank, tmp_path)
    assert inked(pixels) < 0.001


def test_evaluate_writes_a_self_contained_report_that_renders(tmp_path, capsys):
    data_dir = write_image_folder(tmp_path / "images", per_class=10, size=(40, 48))
    model_path = tmp_path / "m.keras"
    saved_classifier(model_path)
    out_dir = tmp_path / "eval"
    status, out, err = _run(
        capsys, "evaluate", model_path, data_dir, "--output-dir", out_dir, "--tta",
        "--top-losses", 6,
    )  # fmt: skip
    assert status == 0, err
    report = out_dir / "report.html"
    assert str(report) in out

    # --tta: both accuracies in metrics.json, the plain one as evaluate gives it.
    metrics = json.loads((out_dir / "metrics.json").read_text())
    model, info = load_classifier(model_path)
    dataset, _, names = load_image_folder(
        data_dir, info.image_size, validation_split=0, shuffle=False, verbose=False,
        resize=info.resize,
    )  # fmt: skip
    plain, averaged = evaluate(model, dataset), evaluate(model, dataset, tta=True)
    assert metrics["accuracy_without_tta"] == pytest.approx(plain.accuracy)
    assert metrics["accuracy"] == pytest.approx(averaged.accuracy)
    assert not np.allclose(plain.probabilities, averaged.probabilities)
    assert metrics["tta"] == ["original", "horizontal_flip"]
    assert "with TTA" in out

    page = report.read_text(encoding="utf-8")
    # Self-contained: every image inlined, nothing fetched, no script.
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == 2 * 6  # each top loss: the photo and its heatmap
    assert all(source.startswith("data:image/jpeg;base64,") for source in sources)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    # The top losses: the lowest probabilities of the true class, worst first.
    true_probability = averaged.probabilities[np.arange(20), averaged.labels]
    relative = [str(pathlib.Path(p).relative_to(data_dir)) for p in dataset.file_paths]
    shown = [relative.index(name) for name in re.findall(r"<figcaption>([^<]*)<br>", page)]
    assert len(shown) == 6
    # Worst first, and none better than an image left out (up to float noise).
    assert np.all(np.diff(true_probability[shown]) >= -1e-6)
    left_out = np.delete(true_probability, shown)
    assert true_probability[shown].max() <= left_out.min() + 1e-6
    for heading in ("Summary", "Per-class scores", "Confusion matrix", "Most confused pairs"):
        assert f"<h2>{heading}</h2>" in page

    dom, console, pixels = render(report, tmp_path)
    assert console == []
    assert "Top losses" in dom and "cats" in dom
    assert inked(pixels) > 0.02


def test_predict_writes_heatmaps_and_averages_over_the_mirror_with_tta(tmp_path, capsys):
    photos = write_image_folder(tmp_path / "photos", per_class=3, size=(40, 48))
    model_path = tmp_path / "m.keras"
    saved_classifier(model_path)
    heatmaps = tmp_path / "heatmaps"
    output = tmp_path / "p.jsonl"
    status, out, err = _run(
        capsys, "predict", model_path, photos, "--heatmaps", heatmaps, "--tta",
        "--output", output, "--top-k", 2, "--batch-size", 4,
    )  # fmt: skip
    assert status == 0, err
    # One overlay per image; the same file names in both class folders
    # (cats/img_0.jpg, dogs/img_0.jpg) do not overwrite each other.
    written = sorted(p.name for p in heatmaps.iterdir())
    assert len(written) == 6 and "img_0.heatmap.jpg" in written and "img_0-2.heatmap.jpg" in written
    with Image.open(heatmaps / "img_0.heatmap.jpg") as image:
        assert image.size == (32, 32)

    # --tta: the mean of the image's and its mirror's probabilities.
    model, info = load_classifier(model_path)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    from keras_transfer.data import decode_image_file

    for row in rows:
        pixels = decode_image_file(row["path"], info.image_size, info.resize)[None].astype(
            "float32"
        )
        expected = (
            model.predict(pixels, verbose=0) + model.predict(pixels[:, :, ::-1], verbose=0)
        ) / 2
        top = row["predictions"][0]
        assert top["probability"] == pytest.approx(float(expected[0].max()), abs=1e-5)
        assert top["index"] == int(expected[0].argmax())


def test_overlay_colours_where_the_heatmap_is_hot():
    from keras_transfer.evaluation.overlay import overlay_heatmap

    image = np.full((8, 8, 3), 120, "uint8")
    heatmap = np.zeros((8, 8), "float32")
    heatmap[:, :4] = 1.0
    drawn = overlay_heatmap(image, heatmap).astype("int16")
    change = np.abs(drawn - 120).sum(axis=-1)
    assert change[:, :4].min() > 3 * change[:, 4:].max()


def test_html_pieces_escape_what_comes_from_data():
    cell = '<img src="https://x">&'
    page = html_page.page_html(
        "t <script>",
        [
            html_page.section_html("s", html_page.table_html(["h"], [[cell]])),
            html_page.thumbnail_grid_html([(["data:image/jpeg;base64,AA=="], [cell])]),
        ],
    )
    assert "https://x" in page and '<img src="https://x">' not in page
    assert "<script>" not in page
    uri = html_page.image_data_uri(np.zeros((300, 100, 3), "uint8"), max_size=60)
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",")[1]))) as image:
        assert image.size == (20, 60)
