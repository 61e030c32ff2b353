"""Benchmark: `keras-transfer audit` on the shared flowers, with 5 % of the labels flipped.

1. Runs `keras_transfer.audit.audit_folder` on the unmodified flowers (2,500
   photos), timed end to end, writes its files to `--output-dir` and a
   contact sheet of its top findings to `--sheet` (docs/audit.md shows it).
2. Flips 5 % of the labels (each to another class, at random, per seed;
   the photos stay where they are: the flipped labels only exist in memory)
   and ranks the photos (`audit_rankings.py`: the issue's baseline, the
   audit with one round and with two, and the audit's classifier trained
   on the true labels). With K the number flipped, it reports the precision
   in the top K and the recall in the top 2K, their means over the seeds
   and the precision's standard error. One seed moves the precision by up
   to 11 points, so the method was picked on 30 flip seeds (`--seeds`) and
   is confirmed on 20 fresh ones (`--confirm-seeds`) that played no part in
   that choice, reported apart. Also: the precision and recall of the set
   cleanlab flags (the rows of label_issues.csv), and how many false
   positives in the top K are photos the audit also flags on the unmodified
   flowers (the set's own errors).
3. Calibrates the near-duplicate threshold: 40 photos, each recompressed
   (JPEG quality 50), shrunk to half, cropped by 5 % a side and mirrored;
   the share of copies whose similarity to their original reaches each
   threshold, and the pairs of unmodified photos that do.

```
nice python benchmarks/audit.py                  # ~30 min on 2 CPU cores
```

Results go to `--json` (default `benchmarks/results/audit.json`).
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import keras_transfer  # noqa: E402
from keras_transfer.audit import audit_folder  # noqa: E402
from keras_transfer.audit.features import backbone_features  # noqa: E402
from keras_transfer.audit.features import concatenate_features  # noqa: E402
from keras_transfer.audit.features import feature_model  # noqa: E402
from keras_transfer.data.loading import image_dataset  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import flowers  # noqa: E402
from audit_rankings import label_error_runs  # noqa: E402
from audit_rankings import summarize  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
THRESHOLDS = (0.8, 0.85, 0.9, 0.95)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(flowers.assets_dir() / "data" / "flower_photos"))
    parser.add_argument("--backbone", action="append", help="repeatable (default: the audit's)")
    parser.add_argument("--image-size", type=int, default=keras_transfer.defaults.AUDIT_IMAGE_SIZE)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--seeds", default="0-29", help="the seeds the method was picked on")
    parser.add_argument("--confirm-seeds", default="100-119", help="fresh seeds, to confirm")
    parser.add_argument("--workers", type=int, default=2, help="processes ranking the seeds")
    parser.add_argument("--output-dir", default=os.path.join(tempfile.gettempdir(), "audit"))
    parser.add_argument("--sheet", default=str(ROOT / "docs" / "audit_top20.png"))
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "audit.json"))
    return parser.parse_args(argv)


def parse_seeds(text):
    """`"0-29"` or `"0,1,2"` as a list of ints."""
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",")]


def mobilenet_v2_050_features(paths, flip):
    """MobileNetV2 0.5 at 224 px (the baseline's features)."""
    spec = keras_transfer.backbones.get_backbone("mobilenet_v2_050")
    model = feature_model(spec, 224, resolve_weights(spec, 224), flip=flip)
    dataset = image_dataset([(p, 0) for p in paths], (224, 224), 32).map(lambda x, y: x)
    return model.predict(dataset, verbose=0)


def resolve_weights(spec, image_size):
    return flowers.resolve_weights(argparse.Namespace(weights=None, image_size=image_size), spec)


def duplicate_calibration(args, audit, weights, count=40):
    rng = np.random.default_rng(0)
    picked = rng.choice(len(audit.paths), count, replace=False)
    copies = []
    folder = tempfile.mkdtemp()
    for i in picked.tolist():
        with Image.open(audit.paths[i]) as original:
            image = original.convert("RGB")
        w, h = image.size
        for kind, copy in (
            ("jpeg_q50", image),
            ("half_size", image.resize((w // 2, h // 2))),
            ("crop_5pc", image.crop((w // 20, h // 20, w - w // 20, h - h // 20))),
            ("mirror", image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        ):
            path = os.path.join(folder, f"{i}_{kind}.jpg")
            copy.save(path, quality=50 if kind == "jpeg_q50" else 90)
            copies.append((i, kind, path))
    features = concatenate_features(
        backbone_features(
            [p for _, _, p in copies], args.backbone, args.image_size, weights, verbose=0
        )
    )
    mean = audit.features.mean(axis=0)

    def unit(x):
        x = x - mean
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    originals = unit(audit.features)
    similarity = np.einsum("ij,ij->i", originals[[i for i, _, _ in copies]], unit(features))
    kinds = np.array([k for _, k, _ in copies])
    pairs = originals @ originals.T
    upper = pairs[np.triu_indices(len(pairs), 1)]
    result = {}
    for t in THRESHOLDS:
        result[str(t)] = {
            k: float((similarity[kinds == k] >= t).mean()) for k in dict.fromkeys(kinds)
        }
        result[str(t)]["pairs_of_unmodified_photos"] = int((upper >= t).sum())
    print(json.dumps({"duplicate_calibration": result}), flush=True)
    return result


def contact_sheet(audit, path, tile=110):
    """The top findings: 8 label issues, 6 outliers, 3 duplicate pairs (20 photos)."""
    from keras_transfer.data import decode_image_file
    from PIL import ImageDraw

    items = [(x.path, f"{x.given}->{x.suggested}") for x in audit.label_issues[:8]]
    items += [(x.path, f"outlier ({x.given})") for x in audit.outliers[:6]]
    for d in audit.duplicates[:3]:
        tag = "leak" if d.across_split else "dup"
        items += [(d.path_a, f"{tag} {d.similarity:.2f}"), (d.path_b, f"{tag} {d.class_b}")]
    columns = 5
    rows = -(-len(items) // columns)
    sheet = Image.new("RGB", (columns * tile, rows * (tile + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (photo, caption) in enumerate(items):
        x, y = (n % columns) * tile, (n // columns) * (tile + 14)
        sheet.paste(
            Image.fromarray(decode_image_file(photo, (tile - 4, tile - 4), "pad")), (x + 2, y)
        )
        draw.text((x + 3, y + tile - 3), caption, fill="black")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sheet.quantize(128).save(path, optimize=True)
    credits = _credits(audit.directory)
    shown = []
    for photo, caption in items:
        name = os.path.relpath(photo, audit.directory)
        shown.append({"path": name, "caption": caption, "credit": credits.get(name, "")})
    return shown


def _credits(directory):
    """`{class/file.jpg: "CC-BY by NAME - URL"}` from the photos' ATTRIBUTIONS.txt."""
    path = os.path.join(directory, "ATTRIBUTIONS.txt")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return dict(line.rstrip("\n").split(" ", 1) for line in f if "/" in line.split(" ")[0])


def main(argv=None):
    args = parse_args(argv)
    args.backbone = args.backbone or list(keras_transfer.defaults.AUDIT_BACKBONES)
    specs = [keras_transfer.backbones.get_backbone(b) for b in args.backbone]
    weights = [resolve_weights(spec, args.image_size) for spec in specs]
    start = time.perf_counter()
    audit = audit_folder(args.data, args.backbone, args.image_size, weights)
    audit_seconds = time.perf_counter() - start
    audit.write(args.output_dir)
    shown = contact_sheet(audit, args.sheet)
    unmodified = {
        "images": len(audit.paths),
        "seconds": audit_seconds,
        "label_issues": len(audit.label_issues),
        "duplicate_pairs": len(audit.duplicates),
        "exact_duplicate_pairs": sum(d.exact for d in audit.duplicates),
        "pairs_across_split": sum(d.across_split for d in audit.duplicates),
        "pairs_across_classes": sum(d.across_classes for d in audit.duplicates),
        "outliers": len(audit.outliers),
        "sheet": shown,
    }
    print(json.dumps({k: v for k, v in unmodified.items() if k != "sheet"}), flush=True)
    start = time.perf_counter()
    one_view = mobilenet_v2_050_features(audit.paths, flip=False)
    baseline_features_seconds = time.perf_counter() - start
    runs, summaries = {}, {}
    for key, seeds in (("picked_on", args.seeds), ("confirmed_on", args.confirm_seeds)):
        seeds = parse_seeds(seeds)
        runs[key] = label_error_runs(seeds, args.noise, audit, one_view, args.workers)
        summaries[key] = {"seeds": seeds, **summarize(runs[key])}
    calibration = duplicate_calibration(args, audit, weights)
    result = {
        "backbones": args.backbone,
        "image_size": args.image_size,
        "noise": args.noise,
        "machine": f"{os.cpu_count()} CPU cores, shared",
        "keras": keras.__version__,
        "unmodified": unmodified,
        "baseline_features_seconds": baseline_features_seconds,
        "flipped_runs": runs,
        "summary": summaries,
        "goal": {"precision_at_k": 0.85, "recall_at_2k": 0.95},
        "duplicate_calibration": calibration,
    }
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(summaries, indent=1))


if __name__ == "__main__":
    main()
