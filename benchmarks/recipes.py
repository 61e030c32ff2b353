"""Benchmark: the accuracy/time frontier of transfer-learning recipes on flower photos.

Each recipe is data (`Recipe`): head epochs, fine-tuning epochs, how many
blocks fine-tuning trains, augmentation (none; `views`: K augmented views
cached once, `TransferClassifier(augmented_views=K)`; `fresh`: new random
draws every epoch, uncached), the head's learning rate and the backbone's
ratio to it, label smoothing, the head's width, and which model the run
keeps (the best-validation epoch, or the weights averaged over the
fine-tuning epochs). `train-default` is what `keras-transfer train` runs
today, `train-v1` what it ran before; `classic` is the Keras guide's two-fit
script (`flowers.build_classic`), for reference.

The photos: `--held-out-per-class` photos of each class (50: 250 photos) are
set aside once, by a fixed seed, and no run sees them; the rest (2,250) go
through `load_image_folder` as the command line reads a folder, with
`--validation-per-class` photos of each class (50) for validation: 2,000
training photos. Every recipe trains on the same split; `--seeds` change the
initialisation, the shuffling and the augmentation draws. The photos are
decoded once, before any timing.

For each run it records the `fit` wall time (cache passes included; two
fits for `classic`) and the process's CPU seconds over it (a rough view of
the cost on a shared machine), the best validation accuracy, and the
held-out accuracy of the kept model, of the best-validation epoch's weights,
of the last epoch's, of every epoch's (the curve, unless `--no-curves`:
a long run holds the shorter ones, `recipe@H+k`) and of the weights averaged
over the last 3 and over all fine-tuning epochs (a run keeping the best
epoch also shows as `recipe+avg`, keeping the average). With 250 held-out
photos one photo is 0.4 points: run several seeds before reading
differences of a point or less. It prints a table (means over seeds), then
the frontier: the best held-out accuracy reachable within 1x, 2x, 4x and 8x
`train-default`'s time, and the recipe the issue's rule picks as the
default: the fastest one within 0.005 of the best held-out accuracy, at no
more than a third of the best recipe's time; then, for runs with curves,
the held-out accuracy each way of choosing the kept epoch gives.

```
nice python benchmarks/recipes.py                          # every recipe, seed 1
# The default against the slowest recipe and the classic script, new seeds:
python benchmarks/recipes.py --recipes train-default,train-v1,fresh-all-3+8,classic \
    --seeds 4,5,6 --no-curves --output benchmarks/results/recipes-final.json
python benchmarks/recipes.py --recipes train-default,views4-ft8 --seeds 1,2,3
python benchmarks/recipes.py --limit 20 --image-size 96 --output /tmp/r.json  # smoke
python benchmarks/recipes.py --list                        # the recipes, as data
python benchmarks/recipes.py --report                      # the tables of --output
```

Results go to `--output` (default `benchmarks/results/recipes.json`),
rewritten after every run; `--append` keeps the runs already there and skips
those it holds, so a subset can be added later and the table printed over
all. Times are only comparable within one machine and load: the load
average is recorded before and after each run.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_transfer  # noqa: E402
from keras_transfer.data.split import permutation  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import flowers  # noqa: E402

ALL = -1  # depth: every block of the backbone
BUDGETS = (1, 2, 4, 8)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One way to train: everything but the data, the backbone and the seed.

    Attributes:
        name: how the tables name it.
        head_epochs: epochs training the head, the backbone frozen.
        fine_tune_epochs: epochs after those that also train `depth` blocks.
        depth: blocks fine-tuning trains, from the top; `ALL` for every one.
        augmentation: "none", "views" (K cached views) or "fresh" (uncached).
        views: K, for `augmentation="views"`.
        learning_rate: Adam learning rate of the head.
        lr_ratio: the backbone's learning rate relative to the head's.
        label_smoothing: of the cross-entropy, 0 for none.
        hidden_units: width of the head's hidden layer, 0 for none.
        classic: the Keras guide's two-fit script instead (only the epochs count).
        keep: the model a run ends with, scored on the held-out photos: "best"
            (the epoch of the best val_accuracy, `train --keep best`) or
            "average" (the weights averaged over the fine-tuning epochs,
            `train --keep average`).
    """

    name: str
    head_epochs: int = 5
    fine_tune_epochs: int = 5
    depth: int = 5
    augmentation: str = "none"
    views: int = 0
    learning_rate: float = 1e-3
    lr_ratio: float = 0.1
    label_smoothing: float = 0.0
    hidden_units: int = 0
    classic: bool = False
    keep: str = "best"


def _views(name, views, head, tune, depth, **kwargs):
    return Recipe(name, head, tune, depth, "views", views, **kwargs)


RECIPES = [
    # What `keras-transfer train` runs today (cli/train.py defaults):
    # the head for 3 epochs, then the last 8 blocks for 8, keeping the
    # weights averaged over those 8.
    Recipe("train-default", 3, 8, 8, keep="average"),
    # What it ran before (0.1): 5 + 5 epochs, the last 5 blocks, the best epoch.
    Recipe("train-v1"),
    _views("views4-ft8", 4, 3, 5, 8),
    Recipe("head-only", head_epochs=10, fine_tune_epochs=0, depth=0),
    _views("views4-head", 4, 8, 0, 0),
    Recipe("ft8", depth=8),
    _views("views4-ft8-ls", 4, 3, 5, 8, label_smoothing=0.1),
    _views("views4-ft12", 4, 3, 5, 12),
    Recipe("classic", classic=True),
    Recipe("fresh-all", 3, 5, ALL, "fresh"),
    _views("views8-ft8", 8, 3, 8, 8),
    _views("views4-ft5", 4, 5, 5, 5),
    _views("views4-ft8-ratio0.3", 4, 3, 5, 8, lr_ratio=0.3),
    Recipe("ft3", depth=3),
    Recipe("ft5-ls", label_smoothing=0.1),
    Recipe("ft5-wide", hidden_units=256),
    Recipe("ft5-ratio0.3", lr_ratio=0.3),
    Recipe("ft5-3+5", head_epochs=3),
    _views("views4-all", 4, 3, 5, ALL),
    Recipe("fresh-all-3+8", 3, 8, ALL, "fresh"),
    # Long runs, scored at every epoch: they contain the shorter ones
    # (`shorter_runs`), e.g. ft8-5+8 holds ft8 as ft8-5+8@5+5.
    Recipe("ft5-5+8", 5, 8, 5),
    Recipe("ft8-5+8", 5, 8, 8),
    Recipe("ft12-5+8", 5, 8, 12),
    Recipe("ft8-3+8", 3, 8, 8),
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", default=str(flowers.assets_dir() / "data" / "flower_photos"))
    parser.add_argument("--weights", help="the backbone's weights file (default: from the assets)")
    parser.add_argument("--backbone", default="mobilenet_v2_050")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--held-out-per-class", type=int, default=50)
    parser.add_argument("--validation-per-class", type=int, default=50)
    parser.add_argument("--split-seed", type=int, default=1337, help="seed of both splits")
    parser.add_argument("--recipes", help="comma-separated names (default: all; see --list)")
    parser.add_argument("--seeds", default="1", help="comma-separated (default: 1)")
    parser.add_argument("--limit", type=int, help="photos per class the runs may use (smoke runs)")
    parser.add_argument(
        "--output",
        default=str(pathlib.Path(__file__).resolve().parent / "results" / "recipes.json"),
    )
    parser.add_argument(
        "--append", action="store_true", help="keep and skip runs already in --output"
    )
    parser.add_argument(
        "--no-curves",
        dest="curves",
        action="store_false",
        help="score only the kept, best and last epochs on the held-out photos, "
        "not every epoch (faster; no shorter runs in the report)",
    )
    parser.add_argument("--list", action="store_true", help="print the recipes and exit")
    parser.add_argument(
        "--report", action="store_true", help="print the tables of --output and exit"
    )
    return parser.parse_args(argv)


def select(names):
    if not names:
        return list(RECIPES)
    by_name = {r.name: r for r in RECIPES}
    unknown = [n for n in names.split(",") if n not in by_name]
    if unknown:
        sys.exit(f"recipes.py: unknown recipes {unknown}; --list shows them.")
    return [by_name[n] for n in names.split(",")]


def split_folders(args, root):
    """Symlink folders `run/` and `held_out/`: the held-out photos are fixed by `--split-seed`."""
    source = pathlib.Path(args.data)
    for label, folder in enumerate(sorted(p for p in source.iterdir() if p.is_dir())):
        photos = sorted(folder.iterdir())
        order = permutation(len(photos), args.split_seed, "held-out", label)
        held = set(order[: args.held_out_per_class].tolist())
        run = [photos[i] for i in order[args.held_out_per_class :]]
        if args.limit:
            run = run[: args.limit]
        for part, chosen in (("run", run), ("held_out", [photos[i] for i in held])):
            target = pathlib.Path(root) / part / folder.name
            target.mkdir(parents=True)
            for photo in chosen:
                os.symlink(photo, target / photo.name)
    return pathlib.Path(root) / "run", pathlib.Path(root) / "held_out", len(run)


def load_splits(args, root):
    """(train, validation, held-out) datasets and the class names, decoded once."""
    run_dir, held_dir, per_class = split_folders(args, root)
    fraction = min(0.5, args.validation_per_class / per_class)
    train, val, class_names = keras_transfer.load_image_folder(
        run_dir,
        args.image_size,
        batch_size=args.batch_size,
        validation_split=fraction,
        seed=args.split_seed,
    )
    held, _, _ = keras_transfer.load_image_folder(
        held_dir,
        args.image_size,
        batch_size=args.batch_size,
        validation_split=0,
        shuffle=False,
        verbose=False,
    )
    # Fill the in-memory caches of decoded photos before any clock starts.
    counts = [sum(len(y) for _, y in ds) for ds in (train, val, held)]
    print(
        f"{counts[0]} training, {counts[1]} validation, {counts[2]} held-out photos "
        f"at {args.image_size} px",
        flush=True,
    )
    return train, val, held, class_names, counts


class BestWeights(keras.callbacks.Callback):
    """Keeps every epoch's weights and time, and which epoch had the best val_accuracy.

    Every epoch's weights (a copy costs milliseconds; the held-out photos are
    scored after `fit`, off the clock) give each run's held-out curve: how a
    shorter fine-tuning would have scored (the learning rates are constant,
    so the first epochs of a longer run are the shorter run) and what each
    way of choosing the kept epoch would have kept.
    """

    def __init__(self, start):
        super().__init__()
        self.start, self.best, self.weights, self.epochs = start, -1.0, None, []
        self.snapshots = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.perf_counter() - self.start
        self.epochs.append(
            {"epoch": epoch, "seconds": seconds, **{k: float(v) for k, v in logs.items()}}
        )
        self.snapshots.append(self.model.get_weights())
        if logs.get("val_accuracy", -1) > self.best:
            self.best, self.weights = float(logs["val_accuracy"]), self.snapshots[-1]
            self.best_epoch, self.best_seconds = epoch, seconds
            self.best_index = len(self.snapshots) - 1


def loss_for(recipe, num_classes):
    if not recipe.label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy()

    # Keras' sparse cross-entropy takes no label smoothing: one-hot labels first.
    def smoothed(y_true, y_pred):
        labels = keras.ops.one_hot(
            keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), num_classes
        )
        return keras.losses.categorical_crossentropy(
            labels, y_pred, label_smoothing=recipe.label_smoothing
        )

    return smoothed


def augmentation_layers():
    return [
        keras.layers.RandomFlip("horizontal"),
        keras.layers.RandomRotation(0.1),
        keras.layers.RandomZoom(0.15),
    ]


def build(recipe, spec, weights, shape, class_names, seed):
    """A `TransferClassifier` for `recipe`: `build_classifier`'s, with augmentation first."""
    keras.utils.set_random_seed(seed)
    head = {"hidden_units": recipe.hidden_units} if recipe.hidden_units else None
    if recipe.augmentation == "none":
        return keras_transfer.build_classifier(
            spec.name,
            len(class_names),
            input_shape=shape,
            weights=weights,
            head=head,
            class_names=class_names,
        )
    inputs = keras.Input(shape, name="image")
    x = inputs
    for layer in augmentation_layers():
        x = layer(x)
    x = keras_transfer.layers.backbone_preprocessing(spec.preprocessing, shape)(x)
    backbone = spec.build(input_shape=shape, weights=weights)
    backbone.trainable = False
    x = backbone(x, training=False)
    head = dict(head or {})
    x = keras_transfer.layers.global_pooling(head.pop("pooling", "avg"))(x)
    outputs = keras_transfer.layers.classifier_head(len(class_names), **head)(x)
    views = recipe.views if recipe.augmentation == "views" else None
    return keras_transfer.TransferClassifier(
        inputs,
        outputs,
        augmented_views=views,
        class_names=class_names,
        cache_frozen_features=recipe.augmentation != "fresh",
        # K views of whole images (depth ALL) do not fit in the default 2 GiB.
        cache_memory_limit=12 * 2**30,
    )


def fit_recipe(recipe, data, spec, weights, shape, seed):
    """Trains one recipe; returns (model, BestWeights, fit seconds)."""
    train, val, _, class_names, _ = data
    if recipe.classic:
        model, base = flowers.build_classic(spec, weights, shape[0], len(class_names), seed)
        start = time.perf_counter()
        best = BestWeights(start)
        model.fit(
            train,
            validation_data=val,
            epochs=recipe.head_epochs,
            callbacks=[best],
            shuffle=False,
            verbose=0,
        )
        flowers.unfreeze_classic(model, base)
        model.fit(
            train,
            validation_data=val,
            initial_epoch=recipe.head_epochs,
            epochs=recipe.head_epochs + recipe.fine_tune_epochs,
            callbacks=[best],
            shuffle=False,
            verbose=0,
        )
        return model, best, time.perf_counter() - start
    model = build(recipe, spec, weights, shape, class_names, seed)
    model.compile(
        keras.optimizers.Adam(recipe.learning_rate),
        loss_for(recipe, len(class_names)),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    callbacks = []
    if recipe.fine_tune_epochs and recipe.depth:
        depth = len(spec.blocks) if recipe.depth == ALL else recipe.depth
        callbacks.append(
            keras_transfer.ProgressiveUnfreeze(
                schedule=keras_transfer.unfreeze.fine_tune_schedule(recipe.head_epochs, depth),
                lr_ratio=recipe.lr_ratio,
                verbose=0,
            )
        )
    start = time.perf_counter()
    best = BestWeights(start)
    model.fit(
        train,
        validation_data=val,
        epochs=recipe.head_epochs + recipe.fine_tune_epochs,
        callbacks=callbacks + [best],
        shuffle=False,
        verbose=0,
    )
    return model, best, time.perf_counter() - start


def run(recipe, data, spec, weights, shape, seed, curves=True):
    load_before, cpu = os.getloadavg()[0], time.process_time()
    model, best, seconds = fit_recipe(recipe, data, spec, weights, shape, seed)
    # CPU seconds of this process: a rough, load-independent view of the cost
    # on a shared machine (wall time is what the frontier uses).
    cpu = time.process_time() - cpu
    info = keras_transfer.caching.feature_cache_info(model)
    held = data[2]
    scored = range(len(best.epochs)) if curves else sorted({best.best_index, len(best.epochs) - 1})
    for index in scored:
        model.set_weights(best.snapshots[index])
        best.epochs[index]["held_out_accuracy"] = float(
            model.evaluate(held, verbose=0, return_dict=True)["accuracy"]
        )
    last = best.epochs[-1]["held_out_accuracy"]
    at_best = best.epochs[best.best_index]["held_out_accuracy"]
    # Weights averaged over the last k epochs (BatchNormalization stays in
    # inference mode, so its statistics need no recomputing): a cheaper
    # answer to a noisy validation curve than picking one epoch by it.
    averaged, averaged_val = {}, {}
    tune = recipe.fine_tune_epochs if not recipe.classic else 0
    for k in sorted({3, tune}):
        if 2 <= k <= tune:
            model.set_weights([_mean(ws) for ws in zip(*best.snapshots[-k:])])
            averaged[str(k)] = float(model.evaluate(held, verbose=0, return_dict=True)["accuracy"])
            averaged_val[str(k)] = float(
                model.evaluate(data[1], verbose=0, return_dict=True)["accuracy"]
            )
    result = {
        "recipe": recipe.name,
        "seed": seed,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "best_val_accuracy": best.best,
        "best_epoch": best.best_epoch,
        "seconds_to_best_epoch": best.best_seconds,
        "final_val_accuracy": best.epochs[-1].get("val_accuracy"),
        # The kept model's (`recipe.keep`); the best epoch's, the last's.
        "held_out_accuracy": averaged[str(tune)] if recipe.keep == "average" else at_best,
        "held_out_accuracy_best": at_best,
        "held_out_accuracy_last": last,
        "held_out_accuracy_averaged": averaged,
        # The same averages' validation accuracy: what a rule choosing
        # between them and the best epoch would see.
        "val_accuracy_averaged": averaged_val,
        "cache_seconds": info.seconds if info else None,
        "cache_boundaries": [list(b) for b in info.boundaries] if info else None,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "epochs": best.epochs,
        "config": dataclasses.asdict(recipe),
    }
    keras.backend.clear_session()
    return result


def _mean(arrays):
    # Integer variables (a random layer's seed state) are not averaged.
    if not np.issubdtype(arrays[-1].dtype, np.floating):
        return arrays[-1]
    return np.mean(arrays, axis=0).astype(arrays[-1].dtype)


def averaged_runs(runs):
    """Each run that averaged its fine-tuning epochs, as the run of `<recipe>+avg`.

    Its held-out accuracy is that of the weights averaged over every
    fine-tuning epoch (what `keras-transfer train --keep average` saves); its
    time is the run's (the average costs milliseconds).
    """
    for r in runs:
        tune = str(r["config"]["fine_tune_epochs"])
        held = (r.get("held_out_accuracy_averaged") or {}).get(tune)
        if held is not None and r["config"].get("keep", "best") != "average":
            yield {
                **r,
                "recipe": r["recipe"] + "+avg",
                "held_out_accuracy": held,
                "held_out_accuracy_last": r["held_out_accuracy_last"],
                "held_out_accuracy_averaged": {},
            }


def summarize(runs):
    """Per recipe: means over its seeds, in the order first run; `+avg` rows after."""
    rows = {}
    for r in list(runs) + list(averaged_runs(runs)):
        rows.setdefault(r["recipe"], []).append(r)
    table = []
    for name, rs in rows.items():
        held = [r["held_out_accuracy"] for r in rs]
        table.append(
            {
                "recipe": name,
                "seeds": len(rs),
                "seconds": float(np.mean([r["seconds"] for r in rs])),
                "cpu_seconds": _mean_or_none([r.get("cpu_seconds") for r in rs]),
                "val": float(np.mean([r["best_val_accuracy"] for r in rs])),
                "held_out": float(np.mean(held)),
                "held_out_range": (min(held), max(held)),
                "held_out_last": float(np.mean([r["held_out_accuracy_last"] for r in rs])),
                "held_out_averaged_3": _mean_or_none(
                    [(r.get("held_out_accuracy_averaged") or {}).get("3") for r in rs]
                ),
                "load": float(np.mean([r["load_before"] for r in rs])),
            }
        )
    return table


def _rank(row):
    # Higher held-out accuracy first; between equals, the faster recipe.
    return row["held_out"], -row["seconds"]


def _mean_or_none(values):
    return None if None in values else float(np.mean(values))


def frontier(table, baseline="train-default"):
    """The best held-out accuracy within each budget, and the recipe the issue's rule picks."""
    base = next((row for row in table if row["recipe"] == baseline), None)
    lines, pick = [], None
    if base is None:
        return [f"(no {baseline} run: no frontier)"], None
    lines.append(f"frontier (time budget in multiples of {baseline}'s {base['seconds']:.0f} s):")
    for budget in BUDGETS:
        within = [row for row in table if row["seconds"] <= budget * base["seconds"] * 1.0001]
        top = max(within, key=_rank)
        lines.append(
            f"  <= {budget}x ({budget * base['seconds']:.0f} s): held-out "
            f"{top['held_out']:.3f}  {top['recipe']} ({top['seconds']:.0f} s)"
        )
    best = max(table, key=_rank)
    fits = [
        row
        for row in table
        if row["held_out"] >= best["held_out"] - 0.005 and row["seconds"] <= best["seconds"] / 3
    ]
    lines.append(
        f"best held-out: {best['recipe']} {best['held_out']:.3f} in {best['seconds']:.0f} s"
    )
    if best is base:
        lines.append(f"default by the rule: {baseline} is itself the best recipe")
    elif fits:
        pick = min(fits, key=lambda row: row["seconds"])
        lines.append(
            f"default by the rule (>= best - 0.005, <= 1/3 of its time): {pick['recipe']} "
            f"{pick['held_out']:.3f} in {pick['seconds']:.0f} s "
            f"({pick['seconds'] / best['seconds']:.2f}x the best's time, "
            f"{pick['seconds'] / base['seconds']:.2f}x {baseline}'s); held-out >= 0.91: "
            f"{'yes' if pick['held_out'] >= 0.91 else 'no'}"
        )
    else:
        lines.append(
            "default by the rule: no recipe within 0.005 of the best at <= 1/3 of its time"
        )
    lines.append(_done_when(base, [row for row in table if row is not base], baseline))
    return lines, pick


def _done_when(base, others, baseline):
    """The issue's check of `baseline` against the best of the other recipes."""
    if not others:
        return f"{baseline}: no other recipe to compare with"
    rival = max(others, key=_rank)
    checks = {
        ">= 0.91": base["held_out"] >= 0.91,
        f">= {rival['recipe']}'s - 0.005": base["held_out"] >= rival["held_out"] - 0.005,
        "<= 1/3 of its time": base["seconds"] <= rival["seconds"] / 3,
    }
    return (
        f"{baseline} {base['held_out']:.3f} in {base['seconds']:.0f} s against the best "
        f"other recipe, {rival['recipe']} {rival['held_out']:.3f} in {rival['seconds']:.0f} s "
        f"({base['seconds'] / rival['seconds']:.2f}x its time): "
        + ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in checks.items())
    )


# Which epoch a run keeps, given its epochs' logs: the command line's `--keep
# best` is ModelCheckpoint's rule, "best acc" (the first epoch of the best
# val_accuracy); "best acc late" takes the last of equals.
KEEP_RULES = {  # name (at most 13 characters, the table's column) -> rule
    "last": lambda epochs: len(epochs) - 1,
    "best acc": lambda epochs: int(np.argmax([e["val_accuracy"] for e in epochs])),
    "best acc late": lambda epochs: (
        len(epochs) - 1 - int(np.argmax([e["val_accuracy"] for e in epochs[::-1]]))
    ),
    "best loss": lambda epochs: int(np.argmin([e["val_loss"] for e in epochs])),
}


def shorter_runs(runs):
    """Each run with held-out curves, and the shorter runs it contains.

    With constant learning rates a run of H + F epochs passes through the run
    of H + k epochs for every k < F: it is named `recipe@H+k`, timed at the
    end of its epoch k, its kept epoch chosen among its own epochs only.
    """
    for r in runs:
        epochs = r.get("epochs") or []
        if (
            not epochs
            or r["config"]["classic"]
            or not all("held_out_accuracy" in e for e in epochs)
        ):
            continue
        head, tune = r["config"]["head_epochs"], r["config"]["fine_tune_epochs"]
        for k in range(1 if tune else 0, tune + 1):
            name = r["recipe"] if k == tune else f"{r['recipe']}@{head}+{k}"
            yield name, r["seed"], epochs[: head + k]


def keep_rules_table(runs, rule_names=tuple(KEEP_RULES)):
    """Per (shorter) recipe: mean held-out accuracy of the epoch each rule keeps."""
    rows = {}
    for name, seed, epochs in shorter_runs(runs):
        row = rows.setdefault(name, {"recipe": name, "seeds": [], "seconds": []})
        row["seeds"].append(seed)
        row["seconds"].append(epochs[-1]["seconds"])
        for rule in rule_names:
            row.setdefault(rule, []).append(epochs[KEEP_RULES[rule](epochs)]["held_out_accuracy"])
    table = []
    for row in rows.values():
        table.append(
            {
                "recipe": row["recipe"],
                "seeds": len(row["seeds"]),
                "seconds": float(np.mean(row["seconds"])),
                **{rule: float(np.mean(row[rule])) for rule in rule_names},
            }
        )
    return table


def print_keep_rules(runs):
    table = keep_rules_table(runs)
    if not table:
        return
    rules = list(KEEP_RULES)
    print(
        f"\nheld-out accuracy of the kept epoch, by rule (runs with curves; "
        f"recipe@H+k: its first H+k epochs)\n{'recipe':<24} {'seeds':>5} {'fit s':>7} "
        + " ".join(f"{rule:>13}" for rule in rules)
    )
    for row in sorted(table, key=lambda row: row["seconds"]):
        print(
            f"{row['recipe']:<24} {row['seeds']:>5} {row['seconds']:>7.1f} "
            + " ".join(f"{row[rule]:>13.3f}" for rule in rules)
        )


def report(runs):
    table = summarize(runs)
    print(
        f"\n{'recipe':<20} {'seeds':>5} {'fit s':>7} {'cpu s':>7} {'best val':>8} "
        f"{'held-out':>8} {'(range)':>13} {'last ep.':>8} {'avg 3':>6} {'load':>5}"
    )
    for row in sorted(table, key=lambda row: row["seconds"]):
        low, high = row["held_out_range"]
        cpu = "n/a" if row["cpu_seconds"] is None else f"{row['cpu_seconds']:.1f}"
        averaged = (
            "n/a" if row["held_out_averaged_3"] is None else f"{row['held_out_averaged_3']:.3f}"
        )
        print(
            f"{row['recipe']:<20} {row['seeds']:>5} {row['seconds']:>7.1f} {cpu:>7} {row['val']:>8.3f} "
            f"{row['held_out']:>8.3f} {f'{low:.3f}-{high:.3f}':>13} "
            f"{row['held_out_last']:>8.3f} {averaged:>6} {row['load']:>5.1f}"
        )
    lines, _ = frontier(table)
    print("\n".join(lines))
    print_keep_rules(runs)
    return table


def main(argv=None):
    args = parse_args(argv)
    recipes = select(args.recipes)
    if args.list:
        for recipe in recipes:
            print(json.dumps(dataclasses.asdict(recipe)))
        return
    if args.report:
        report(json.loads(pathlib.Path(args.output).read_text())["runs"])
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    spec = keras_transfer.get_backbone(args.backbone)
    weights = flowers.resolve_weights(args, spec)
    output = pathlib.Path(args.output)
    runs = []
    if args.append and output.exists():
        runs = json.loads(output.read_text())["runs"]
    done = {(r["recipe"], r["seed"]) for r in runs}
    shape = (args.image_size, args.image_size, 3)
    with tempfile.TemporaryDirectory() as root:
        data = load_splits(args, root)
        for seed in seeds:
            for recipe in recipes:
                if (recipe.name, seed) in done:
                    continue
                print(f"--- {recipe.name} seed {seed} (load {os.getloadavg()[0]:.1f})", flush=True)
                runs.append(run(recipe, data, spec, weights, shape, seed, args.curves))
                r = runs[-1]
                cached = "" if r["cache_seconds"] is None else f", cache {r['cache_seconds']:.1f} s"
                print(
                    f"    {r['seconds']:.1f} s ({r['cpu_seconds']:.0f} CPU s){cached}, best val {r['best_val_accuracy']:.3f} "
                    f"(epoch {r['best_epoch'] + 1}), held-out {r['held_out_accuracy']:.3f} "
                    f"(last epoch {r['held_out_accuracy_last']:.3f}; averaged over the last "
                    f"k epochs {r['held_out_accuracy_averaged']})",
                    flush=True,
                )
                save(output, args, data[4], runs)
    table = report(runs)
    save(output, args, data[4], runs, table)


def save(output, args, counts, runs, table=None):
    output.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "arguments": vars(args),
        "photos": dict(zip(("train", "validation", "held_out"), counts)),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "keras": keras.__version__,
            "keras_transfer": keras_transfer.__version__,
        },
        "runs": runs,
        "table": table,
    }
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    tmp.replace(output)


if __name__ == "__main__":
    main()
