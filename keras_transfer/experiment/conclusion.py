"""The report's conclusion: plain-language findings computed from the numbers.

Each sentence compares runs of the table (accuracy gained from pretrained
weights, time to the target accuracy, what fine-tuning added to the head
alone, whether training from scratch generalised) or warns when the numbers
cannot carry a finding (few validation images, skipped backbones).
"""

from keras_transfer.experiment.formatting import format_duration
from keras_transfer.experiment.formatting import format_percent
from keras_transfer.experiment.formatting import limit_text
from keras_transfer.experiment.formatting import target_text
from keras_transfer.experiment.methods import METHOD_LABELS
from keras_transfer.experiment.methods import PRETRAINED_PHRASES

# Accuracy differences below half a point read as a tie.
_TIE = 0.005

# Below this many validation images, a few points of accuracy are noise.
_FEW_VALIDATION_IMAGES = 200


def conclude(results):
    """The findings of a comparison, one sentence each.

    Example:

    ```python
    for sentence in conclude(results):
        print("-", sentence)
    ```

    Args:
        results: the comparison's results (`runs`, `skipped`, `class_names`,
            `num_validation_images`, `target_accuracy`, `epochs`,
            `budget_minutes`), as in `results.json`.

    Returns:
        A list of sentences; empty when there is nothing to say.
    """
    sentences = []
    by_backbone = {}
    for run in results["runs"]:
        by_backbone.setdefault(run["backbone"], {})[run["method"]] = run
    for backbone, runs in by_backbone.items():
        sentences += _backbone_findings(backbone, runs, results)
    validated = [r for r in results["runs"] if r["best_val_accuracy"] is not None]
    if len(by_backbone) > 1 and validated:
        sentences += _best_runs(validated, results)
    num_val = results["num_validation_images"]
    if results["runs"] and num_val < _FEW_VALIDATION_IMAGES:
        sentences.append(
            f"With {num_val} validation images, one image is {100 / num_val:.1f} "
            "points of accuracy: differences of a few points are noise."
        )
    if results["skipped"]:
        names = ", ".join(s["backbone"] for s in results["skipped"])
        sentences.append(f"Not compared: {names} (weights unavailable, see Skipped above).")
    return sentences


def _backbone_findings(backbone, runs, results):
    """Pretrained against scratch, then fine-tuning against the head alone."""
    scratch = runs.get("scratch")
    head = runs.get("head_only")
    fine = runs.get("fine_tune")
    pretrained = [r for r in (head, fine) if r and r["best_val_accuracy"] is not None]
    sentences = []
    if scratch and pretrained and scratch["best_val_accuracy"] is not None:
        best = max(pretrained, key=lambda r: r["best_val_accuracy"])
        sentences.append(_gain(backbone, best, scratch, results))
    if scratch:
        reached = [r for r in pretrained if r["seconds_to_target"] is not None]
        if head in reached and fine in reached and _target_phase(fine, results) == 0:
            # Before its first unfreeze the fine-tuning run is the head-only
            # run (same seeds, same batches): any lead it has there is
            # timing noise, not fine-tuning.
            reached = [head]
        first = min(reached, key=lambda r: r["seconds_to_target"]) if reached else None
        sentences.append(_time_to_target(backbone, first, scratch, target_text(results)))
        sentences += _scratch_generalisation(backbone, scratch, results)
    if (
        head
        and fine
        and head["best_val_accuracy"] is not None
        and fine["best_val_accuracy"] is not None
    ):
        sentences.append(_fine_tune_against_head(backbone, fine, head))
    return sentences


def _target_phase(run, results):
    """The phase of the epoch in which `run` first reached the target; None if unknown."""
    for record in run.get("history") or ():
        accuracy = record.get("val_accuracy")
        if accuracy is not None and accuracy >= results["target_accuracy"]:
            return record.get("phase")
    return None


def _gain(backbone, best, scratch, results):
    """What the best pretrained run gained in accuracy over scratch."""
    gain = best["best_val_accuracy"] - scratch["best_val_accuracy"]
    if gain > _TIE:
        return (
            f"{backbone}: pretrained weights bought {100 * gain:.1f} points of "
            f"validation accuracy in the same {limit_text(results, short=True)}: "
            f"{format_percent(best['best_val_accuracy'])} "
            f"({METHOD_LABELS[best['method']]}) against "
            f"{format_percent(scratch['best_val_accuracy'])} from scratch."
        )
    return (
        f"{backbone}: the pretrained runs did not beat training from scratch "
        f"({format_percent(best['best_val_accuracy'])} against "
        f"{format_percent(scratch['best_val_accuracy'])} validation accuracy)."
    )


def _time_to_target(backbone, first, scratch, target):
    """Which reached the target first: `first` (a pretrained run) or scratch."""
    scratch_time = scratch["seconds_to_target"]
    if first and scratch_time is not None:
        ratio = scratch_time / first["seconds_to_target"]
        if ratio >= 1:
            return (
                f"{backbone} {PRETRAINED_PHRASES[first['method']]} reached {target} "
                f"validation accuracy after {format_duration(first['seconds_to_target'])}, "
                f"{ratio:.1f}x sooner than from scratch ({format_duration(scratch_time)})."
            )
        return (
            f"{backbone}: from scratch reached {target} validation accuracy "
            f"first, after {format_duration(scratch_time)} (pretrained: "
            f"{format_duration(first['seconds_to_target'])})."
        )
    if first:
        return (
            f"{backbone} {PRETRAINED_PHRASES[first['method']]} reached {target} "
            f"validation accuracy after {format_duration(first['seconds_to_target'])}; "
            f"from scratch, it never did in {format_duration(scratch['total_seconds'])}."
        )
    if scratch_time is not None:
        return (
            f"{backbone}: only the run from scratch reached {target} validation "
            f"accuracy, after {format_duration(scratch_time)}."
        )
    return f"{backbone}: no run reached {target} validation accuracy."


def _fine_tune_against_head(backbone, fine, head):
    """What unfreezing the top of the backbone added to the head alone."""
    if len(fine["phases"]) < 2:
        return (
            f"{backbone}: the fine-tuning run ended before its first "
            "unfreeze, so it trained the head only, like the head-only run; "
            "give it more epochs or a larger budget."
        )
    change = fine["best_val_accuracy"] - head["best_val_accuracy"]
    if change > _TIE:
        verdict = f"added {100 * change:.1f} points over"
    elif change < -_TIE:
        verdict = f"lost {100 * -change:.1f} points against"
    else:
        verdict = "matched"
    return (
        f"{backbone}: fine-tuning the top of the backbone after the head "
        f"{verdict} the head alone ({format_percent(fine['best_val_accuracy'])} "
        f"against {format_percent(head['best_val_accuracy'])})."
    )


def _best_runs(validated, results):
    """Across backbones: the most accurate run and the fastest to the target."""
    best = max(validated, key=lambda r: r["best_val_accuracy"])
    sentences = [
        f"Best run: {best['label']}, {format_percent(best['best_val_accuracy'])} "
        f"validation accuracy in {format_duration(best['total_seconds'])}."
    ]
    reached = [r for r in validated if r["seconds_to_target"] is not None]
    if reached:
        fastest = min(reached, key=lambda r: r["seconds_to_target"])
        sentences.append(
            f"Fastest to {target_text(results)}: {fastest['label']}, after "
            f"{format_duration(fastest['seconds_to_target'])}."
        )
    return sentences


def _scratch_generalisation(backbone, scratch, results):
    """What the run from scratch learned that carries over to new images."""
    best_train, best_val = scratch["best_accuracy"], scratch["best_val_accuracy"]
    final_train, final_val = scratch["final_accuracy"], scratch["final_val_accuracy"]
    if None in (best_train, best_val, final_train, final_val):
        return []
    classes = len(results["class_names"])
    chance = 1 / classes
    if best_val <= chance + 0.02 and best_train > chance + 0.1:
        return [
            f"{backbone}: from scratch, validation accuracy never rose above "
            f"{format_percent(best_val)} (chance for {classes} classes: "
            f"{format_percent(chance)}) while train accuracy, measured on batch "
            f"statistics during training, reached {format_percent(best_train)}. Early "
            "in training from scratch, this usually means that the BatchNormalization "
            "moving statistics, which inference uses, lag behind the weights, "
            "rather than overfitting: the network needs a longer budget."
        ]
    gap = final_train - final_val
    if gap >= 0.1:
        return [
            f"{backbone}: from scratch, the final train accuracy "
            f"({format_percent(final_train)}) is {100 * gap:.0f} points above "
            f"validation ({format_percent(final_val)}): much of what it learned does "
            "not carry over to new images (overfitting)."
        ]
    return []
