"""The flipped-label part of benchmarks/audit.py: rankings of the photos, one flip seed at a time.

Kept apart from audit.py so that the seeds can run in worker processes
(`label_error_runs(..., workers=2)`): spawned rather than forked from the
process that holds TensorFlow, they get the features once, when they start,
and rank with NumPy, scikit-learn and cleanlab alone.

For each flip seed, 5 % of the labels move to another class at random (in
memory only) and four rankings are scored by their precision in the top K
and recall in the top 2K (K: the photos flipped):

- `baseline`: the issue author's, a default `LogisticRegression()` (C=1)
  in 5 folds on MobileNetV2 0.5's features of one view at 224 px, ranked by
  the out-of-fold probability of the given label;
- `previous_audit`: the audit before it ran two rounds: its features, one
  round of `out_of_fold_probabilities` (`reweight=False`);
- `audit`: what `keras-transfer audit` does (`out_of_fold_probabilities`);
- `true_labels`: the audit's classifier (the first round's C) trained on the
  true labels, ranked by the probability of the flipped ones: what a
  classifier that no wrong label has misled reaches on these features, the
  most that down-weighting the wrong labels can give.
"""

import concurrent.futures
import json
import multiprocessing
import time

import numpy as np

from keras_transfer.audit.label_issues import label_quality
from keras_transfer.audit.label_issues import out_of_fold_probabilities

_SHARED = {}


def flip_labels(labels, fraction, seed, classes):
    """Labels with `fraction` of them moved to another class; and which moved."""
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), round(fraction * len(labels)), replace=False)
    noisy = labels.copy()
    for i in flipped:
        noisy[i] = rng.choice([c for c in range(classes) if c != labels[i]])
    return noisy, flipped


def ranking_scores(order, flipped, flagged=None):
    k = len(flipped)
    truth = set(flipped.tolist())
    scores = {
        "precision_at_k": len(truth & set(order[:k].tolist())) / k,
        "recall_at_2k": len(truth & set(order[: 2 * k].tolist())) / k,
    }
    if flagged is not None:
        hits = len(truth & set(flagged.tolist()))
        scores.update(
            flagged=len(flagged),
            flagged_precision=hits / max(1, len(flagged)),
            flagged_recall=hits / k,
        )
    return scores


def _fold_probabilities(features, labels, seed, c):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.model_selection import cross_val_predict
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return cross_val_predict(
            LogisticRegression(C=c, max_iter=1000),
            features,
            labels,
            cv=StratifiedKFold(5, shuffle=True, random_state=seed),
            method="predict_proba",
        )


def _start_worker(shared):
    _SHARED.update(shared)


def label_error_run(seed):
    """The four rankings' scores for one flip seed (reads the worker's shared arrays)."""
    import cleanlab
    from sklearn.preprocessing import normalize

    labels, features = _SHARED["labels"], _SHARED["features"]
    noisy, flipped = flip_labels(labels, _SHARED["noise"], seed, _SHARED["classes"])
    run = {"seed": seed, "flipped": len(flipped)}
    start = time.perf_counter()
    p = _fold_probabilities(_SHARED["one_view"], noisy, seed, 1.0)
    run["baseline"] = ranking_scores(
        np.argsort(p[np.arange(len(noisy)), noisy], kind="stable"), flipped
    )
    run["baseline"]["seconds"] = time.perf_counter() - start
    for name, reweight in (("previous_audit", False), ("audit", True)):
        start = time.perf_counter()
        p, c = out_of_fold_probabilities(features, noisy, 5, seed, reweight=reweight)
        order = np.argsort(label_quality(p, noisy), kind="stable")
        flagged = np.nonzero(cleanlab.filter.find_label_issues(noisy, p, n_jobs=1))[0]
        run[name] = ranking_scores(order, flipped, flagged)
        run[name].update(C=c, seconds=time.perf_counter() - start)
        false = [i for i in order[: len(flipped)].tolist() if i not in set(flipped.tolist())]
        run[name]["false_positives_in_top_k"] = len(false)
        run[name]["of_them_flagged_on_unmodified"] = len(_SHARED["own"] & set(false))
    p = _fold_probabilities(normalize(features), labels, seed, run["previous_audit"]["C"])
    run["true_labels"] = ranking_scores(
        np.argsort(p[np.arange(len(noisy)), noisy], kind="stable"), flipped
    )
    print(json.dumps(run), flush=True)
    return run


def label_error_runs(seeds, noise, audit, one_view, workers=2):
    """`label_error_run` for each seed, in `workers` spawned processes."""
    import cleanlab

    # The photos the audit flags on the unmodified set: the set's own errors.
    own = cleanlab.filter.find_label_issues(audit.labels, audit.probabilities, n_jobs=1)
    shared = {
        "labels": audit.labels,
        "features": audit.features,
        "one_view": np.asarray(one_view),
        "noise": noise,
        "classes": len(audit.class_names),
        "own": set(np.nonzero(own)[0].tolist()),
    }
    with concurrent.futures.ProcessPoolExecutor(
        workers, multiprocessing.get_context("spawn"), _start_worker, (shared,)
    ) as pool:
        return list(pool.map(label_error_run, seeds))


def summarize(runs):
    names = ("baseline", "previous_audit", "audit", "true_labels")
    summary = {}
    for name in names:
        precision = np.array([run[name]["precision_at_k"] for run in runs])
        summary[name] = {
            "precision_at_k": float(precision.mean()),
            "precision_at_k_standard_error": float(precision.std(ddof=1) / np.sqrt(len(runs))),
            "recall_at_2k": float(np.mean([run[name]["recall_at_2k"] for run in runs])),
        }
    for name in names[1:]:
        summary[name]["ratio_to_baseline_precision"] = (
            summary[name]["precision_at_k"] / summary["baseline"]["precision_at_k"]
        )
    return summary
