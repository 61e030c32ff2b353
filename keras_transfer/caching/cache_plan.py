"""The cache plan of one `fit`: what to compute once, and what each phase trains.

From the unfreeze plan (when a `ProgressiveUnfreeze` is among the
callbacks) or the model's current `trainable` flags, `make_plan` works out,
for each phase of the fit, which tensors stay constant (a `PhasePlan`), and
the prefix of the graph that computes all of them once per image. It
returns a `Fallback` with the reason when caching cannot be correct.
"""

import dataclasses

import keras
import tensorflow as tf

from keras_transfer.backbones import find_backbone
from keras_transfer.caching import jax_backend
from keras_transfer.caching.graph import RANDOM
from keras_transfer.caching.graph import TRAINING_MODE
from keras_transfer.caching.graph import Graph
from keras_transfer.caching.graph import mark_per_view
from keras_transfer.caching.graph import probe_steps
from keras_transfer.caching.graph import steps_to_probe
from keras_transfer.caching.graph import trains_now
from keras_transfer.caching.inputs import Fallback
from keras_transfer.caching.inputs import inspect_dataset
from keras_transfer.caching.inputs import is_array
from keras_transfer.caching.inputs import sample_batch
from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.checks import check_int
from keras_transfer.utils.internals import MissingInternalError
from keras_transfer.utils.internals import flatten_layers
from keras_transfer.unfreeze.plan import plan_from_callbacks

# The tf.distribute strategies under which a fit is cached (the pass runs
# outside the replicas; Keras distributes the feature batches).
SUPPORTED_STRATEGIES = (tf.distribute.MirroredStrategy,)

# The Keras backends whose fits cache frozen features (PyTorch trains uncached).
BACKENDS = ("tensorflow", "jax")

# Keys of the feature dictionaries that stand in for images during a cached fit.
FEATURE_KEY = "keras_transfer_feature_"


@dataclasses.dataclass
class PhasePlan:
    """How one phase runs: which cached tensors it starts from, what it computes."""

    cut_ids: tuple
    suffix: list
    constant: set
    trains: object


def make_phase_plan(graph, trains):
    constant = graph.constant_ids(trains)
    suffix = [s for s in graph.steps if not set(s.outputs) <= constant]
    cuts = {k for s in suffix for k in s.inputs if k in constant}
    cuts |= {k for k in graph.output_ids if k in constant}
    return PhasePlan(tuple(sorted(cuts, key=graph.order.get)), suffix, constant, trains)


@dataclasses.dataclass
class CachePlan:
    graph: Graph
    phase_plans: list  # most frozen first
    keys: dict  # cut id -> feature key
    prefix: list  # steps computing every cut
    shuffle: object  # for dataset inputs: whether to reshuffle each epoch
    note: str = None
    views: int = 1  # augmented views of the training data (epoch e reads e % views)


def make_plan(model, kw):
    """The `CachePlan` of a `fit` with arguments `kw`, or a `Fallback` saying why not."""
    shuffle = check_fit_inputs(model, kw)
    if isinstance(shuffle, Fallback):
        return shuffle
    try:
        plan = plan_from_callbacks(kw["callbacks"], model)
    except ValueError as e:
        return Fallback(str(e))
    if plan is None:
        backbone_ids = backbone_layer_ids(model)
        predicates = [trains_now]
    else:
        backbone_ids = {id(l) for l in flatten_layers(plan.backbone)}
        predicates = [
            plan.trains_at(depth)
            for depth in plan.depths_between(kw["initial_epoch"], kw["epochs"])
        ]
    try:
        graph = Graph(model, backbone_ids)
        # User layers that could be cached are tried before any phase_plan is
        # made: their randomness decides what stays constant.
        to_probe = steps_to_probe(graph, predicates)
        if to_probe:
            probe_steps(graph, to_probe, sample_batch(kw["x"], model.inputs[0]))
    except MissingInternalError as e:
        return Fallback(str(e))
    views = augmented_views(model)
    if views > 1 and not mark_per_view(graph, predicates):
        views = 1  # Nothing random before the frozen layers: one view is all.
    phase_plans = make_phase_plans(graph, predicates)
    note = partial_cache_note(graph, phase_plans[0])
    most_frozen = phase_plans[0].constant
    if not any(s.weighted and set(s.outputs) <= most_frozen for s in graph.steps):
        return Fallback(note)
    keys = feature_keys(phase_plans)
    return CachePlan(graph, phase_plans, keys, prefix_steps(graph, keys), shuffle, note, views)


def check_fit_inputs(model, kw):
    """A `Fallback` when the model or `fit`'s data rule the cache out.

    Otherwise, for a training dataset, whether it reshuffles itself each
    epoch (`inspect_dataset`), and None for arrays.
    """
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        return Fallback(f"it needs the TensorFlow or JAX backend (this is {backend!r}).")
    if not getattr(model, "compiled", False) or kw["epochs"] <= kw["initial_epoch"]:
        return Fallback()
    if len(model.inputs) != 1:
        return Fallback("it supports models with one input.")
    reason = distribution_fallback(model)
    if reason is not None:
        return Fallback(reason)
    x = kw["x"]
    shuffle = None
    if isinstance(x, tf.data.Dataset):
        if kw["steps_per_epoch"] is not None:
            return Fallback(
                "steps_per_epoch is set; caching needs epochs that go once "
                "through a finite dataset."
            )
        if kw["validation_split"]:
            return Fallback()  # Keras raises its own error.
        shuffle = _check_dataset(x, "training")
    elif is_array(x):
        if kw["y"] is None:
            return Fallback("the training data has no labels.")
        if kw["steps_per_epoch"] is not None:
            return Fallback("steps_per_epoch is set.")
    else:
        return Fallback(
            f"it supports NumPy arrays, tensors and finite tf.data datasets; "
            f"the training data is a {type(x).__name__}."
        )
    validation = kw["validation_data"]
    if isinstance(shuffle, Fallback) or validation is None:
        return shuffle
    if kw["validation_steps"] is not None:
        return Fallback("validation_steps is set.")
    if isinstance(validation, tf.data.Dataset):
        checked = _check_dataset(validation, "validation")
        return checked if isinstance(checked, Fallback) else shuffle
    if not (
        isinstance(validation, (tuple, list))
        and 2 <= len(validation) <= 3
        and all(v is None or is_array(v) for v in validation)
    ):
        return Fallback(
            "validation_data must be a tf.data.Dataset or a tuple of "
            f"arrays; it is a {type(validation).__name__}."
        )
    return shuffle


def _check_dataset(dataset, role):
    """`inspect_dataset(dataset)`, or a `Fallback` for an endless or unlabelled one."""
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        return Fallback(f"the {role} dataset repeats forever.")
    if not isinstance(dataset.element_spec, tuple) or len(dataset.element_spec) < 2:
        return Fallback()  # No labels: Keras reports it.
    return inspect_dataset(dataset)


def make_phase_plans(graph, predicates):
    """One `PhasePlan` per distinct cut of the fit's phases, most frozen first.

    The trained layers only grow from phase to phase (ProgressiveUnfreeze's
    depths never decrease), so each phase_plan's cached tensors stay valid until
    the phase that first trains below them.
    """
    phase_plans = {}
    for trains in predicates:
        phase_plan = make_phase_plan(graph, trains)
        phase_plans.setdefault(phase_plan.cut_ids, phase_plan)
    return sorted(phase_plans.values(), key=lambda r: len(r.suffix))


def partial_cache_note(graph, most_frozen_regime):
    """Why frozen weighted layers are left out of the cache (random steps before them), or None."""
    ideal = graph.constant_ids(most_frozen_regime.trains, honour_randomness=False)
    most_frozen = most_frozen_regime.constant
    if not any(
        s.weighted and set(s.outputs) <= ideal and not set(s.outputs) <= most_frozen
        for s in graph.steps
    ):
        return None
    return blocked_note(
        [
            s
            for s in graph.steps
            if s.draws_anew
            and set(s.outputs) <= ideal
            and not set(s.outputs) <= most_frozen
            and all(k in most_frozen for k in s.inputs)
        ]
    )


def feature_keys(phase_plans):
    """Each cut's feature name."""
    keys = {}
    for phase_plan in phase_plans:
        for key in phase_plan.cut_ids:
            keys.setdefault(key, f"{FEATURE_KEY}{len(keys)}")
    return keys


def prefix_steps(graph, keys):
    """The steps that compute every cut, in graph order."""
    needed = set(keys)
    prefix = []
    for step in reversed(graph.steps):
        if needed & set(step.outputs):
            prefix.append(step)
            needed |= set(step.inputs)
    prefix.reverse()
    return prefix


def distribution_fallback(model):
    """Why the model's distribution (tf.distribute, keras.distribution) rules the cache out, or None."""
    if keras.backend.backend() == "jax":
        return jax_backend.distribution_fallback()
    if keras.distribution.distribution() is not None:
        return "keras.distribution is supported on the JAX backend only."
    strategy = model.distribute_strategy
    with strategy.scope():
        distributed = tf.distribute.has_strategy()
    if distributed and type(strategy) not in SUPPORTED_STRATEGIES:
        # Tested: MirroredStrategy over two logical CPUs, which trains as on
        # one device. Several workers would each cache their own shard (and
        # must agree on it), TPUs compile the step: not tested, so not cached.
        return (
            f"it supports tf.distribute.MirroredStrategy only; the model's "
            f"strategy is {type(strategy).__name__}."
        )
    return None


def augmented_views(model):
    """The model's `augmented_views` as a number of views (1: no augmented views)."""
    views = check_int(
        getattr(model, "augmented_views", None),
        "augmented_views",
        optional=True,
        hint="None or 0 trains uncached with random layers before frozen ones.",
    )
    return max(views or 1, 1)


def blocked_note(blockers):
    """Why the frozen layers after `blockers` (random steps) cannot be cached."""

    def names(steps):
        return ", ".join(repr(s.op.name) for s in steps)

    random = [s for s in blockers if s.finding in (None, RANDOM)]
    modal = [s for s in blockers if s.finding == TRAINING_MODE]
    parts = []
    if random:
        parts.append(
            f"random layer(s) {names(random)} before frozen layers (data "
            "augmentation?) give each epoch new inputs (augmented_views=K "
            "caches K augmented views of each image instead)"
        )
    if modal:
        parts.append(
            f"layer(s) {names(modal)} before frozen layers give other outputs "
            "in training than in inference (what the cache computes)"
        )
    for s in blockers:
        if s not in random and s not in modal:
            parts.append(
                f"layer {s.op.name!r} could not be checked for randomness "
                f"({s.finding}) and counts as random (if it is deterministic, "
                "let its call accept any batch of the model's input shape)"
            )
    return "; ".join(parts) + ", so those frozen layers cannot be cached."


def backbone_layer_ids(model):
    try:
        backbone, _ = find_backbone(model)
    except ConfigurationError:
        return set()
    if backbone is model:
        return set()
    return {id(l) for l in flatten_layers(backbone)}
