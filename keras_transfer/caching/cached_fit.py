"""One cached `fit`: the inference pass that fills the cache, and the steps that train on it.

`CachedFit.prepare` turns the user's `fit` arguments into feature arguments;
`CachedFit.forward` runs the trained part of the model from the cached
tensors of the current phase; `PhaseSwitch` moves to the next phase's
tensors when the unfreeze plan changes what trains, and computes the
features again when a callback changed the frozen weights as training
began (`BackupAndRestore` restoring a backup into a freshly built model).
"""

import dataclasses
import math
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.caching.extract import make_extractor
from keras_transfer.caching.graph import trains_now
from keras_transfer.caching.info import FeatureCacheInfo
from keras_transfer.caching.info import INFO_ATTRIBUTE
from keras_transfer.caching.info import feature_cache_info
from keras_transfer.caching.inputs import FallbackError
from keras_transfer.caching.inputs import is_array
from keras_transfer.caching.sharing_keys import sharing_key
from keras_transfer.caching.sharing_keys import weight_checksums
from keras_transfer.caching.feature_batches import FeatureBatches
from keras_transfer.caching.feature_batches import FeatureSource
from keras_transfer.caching.feature_batches import array_batches
from keras_transfer.caching.feature_batches import dataset_batches
from keras_transfer.caching.feature_batches import slice_structure
from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.internals import print_msg


class CachedFit:
    """The cached features of one `fit` and the step that trains on them."""

    def __init__(self, model, plan):
        self.model = model
        self.plan = plan
        self.phase_plan = plan.phase_plans[-1]  # The least frozen is always correct.
        # Phase plans only move towards less frozen ones: a layer that trained
        # and was frozen again has outdated cached outputs.
        self._earliest = 0
        self._directory = None
        self._extract = None  # the pass's function (see caching.extract)
        self._sources = ()  # the training and validation FeatureSource
        self._views = []  # the training features of each augmented view
        self._rename = {}  # feature name in the fit -> name in the views
        self._inputs = None  # what the features are computed from
        self._checksums = None  # of the frozen weights that computed them
        self._owns_features = False
        self._verbose = 0

    # --- features

    def prepare(self, kw):
        """Computes (or reuses) the features; returns `fit`'s arguments on them."""
        start = time.perf_counter()
        kw = dict(kw)
        self._verbose = kw["verbose"]
        store = getattr(self.model, "feature_store", None)
        # Augmented views are random draws: each fit makes its own.
        key = (
            sharing_key(self.model, self.plan, kw)
            if store is not None and self.plan.views == 1
            else None
        )
        shared = store.lookup(key) if key is not None else None

        x, y, sample_weight, validation = _split_validation(kw)
        if isinstance(x, tf.data.Dataset):
            batch_size = None
            shuffle = bool(self.plan.shuffle)
        else:
            batch_size = kw["batch_size"] or 32
            shuffle = kw["shuffle"]
        inputs = (x, y, sample_weight, validation, batch_size, kw["validation_batch_size"])
        if shared is not None:
            views, val = [shared.train], shared.validation
            rename = {self.plan.keys[cut]: shared.names[sig] for cut, sig in key.cuts.items()}
        else:
            views, val = self._compute(*inputs)
            rename = {name: name for name in self.plan.keys.values()}
            self._owns_features = True
            if key is not None and store.insert(key, views[0], val, self._directory):
                self._directory = None  # The store deletes it with the entry.
                self._owns_features = False
        if _has_callbacks(kw["callbacks"]):
            # Only a callback can change frozen weights before the first epoch.
            self._checksums = weight_checksums(self._frozen_ops(self.plan.phase_plans))
            self._inputs = inputs

        # Both storages reach Keras as one pipeline that reads rows by index,
        # so that a disk-backed cache shuffles as the in-memory one does, and
        # recomputed features can replace these before the first epoch.
        train = views[0]
        self._views, self._rename = views, rename
        self._sources = (FeatureSource(train, rename),) + (
            (FeatureSource(val, rename),) if val is not None else ()
        )
        train_batches, steps = self._training_pipeline(x, batch_size or train.batch_size, shuffle)
        kw.update(
            x=train_batches,
            steps_per_epoch=steps,
            y=None,
            sample_weight=None,
            batch_size=None,
            shuffle=False,
            validation_split=0.0,
        )
        if val is not None:
            kw["validation_data"] = self._sources[1].dataset(val.batch_size)
            kw["validation_batch_size"] = None
        kw["callbacks"] = _with_callback(kw["callbacks"], PhaseSwitch(self))
        info = FeatureCacheInfo(
            storage=_storage(views, val),
            samples=train.count,
            validation_samples=val.count if val is not None else 0,
            nbytes=sum(v.nbytes for v in views) + (val.nbytes if val is not None else 0),
            seconds=time.perf_counter() - start,
            boundaries=tuple(self._boundary_names(r) for r in self.plan.phase_plans),
            reused=shared is not None,
            views=len(views),
        )
        object.__setattr__(self.model, INFO_ATTRIBUTE, info)
        if self._verbose != 0:
            print_msg(_describe_cache(info, store))
        return kw

    def _training_pipeline(self, x, batch_size, shuffle):
        """`(dataset, steps_per_epoch)` of the cached training features, for Keras' `fit`.

        One iterator for the whole fit where it reads right: over a finite
        dataset Keras makes a new iterator at every epoch, and in
        `keras-transfer train` on 2 CPU cores the first step after it waited
        2-10 s in one to three fine-tuning epochs of most runs; repeated,
        with the epoch's length given, none did (docs/speed-and-caching.md).
        Each repetition draws its own order, as each new iterator did. Kept
        per epoch (steps None): Keras' order for arrays, which a repetition
        would draw differently, and augmented views, whose next epoch's
        first batches one iterator would read ahead from the previous view.
        """
        # Arrays: Keras' own order, so results match uncached fits.
        keras_order = is_array(x)
        dataset = self._sources[0].dataset(
            batch_size, shuffle, reshuffle_each_epoch=not keras_order
        )
        if len(self._views) > 1 or (keras_order and shuffle):
            return dataset, None
        return dataset.repeat(), int(dataset.cardinality())

    def _compute(self, x, y, sample_weight, validation, batch_size, validation_batch_size):
        """One pass over the training and validation data: ([training views], validation)."""
        limit = self.model.cache_memory_limit
        if isinstance(x, tf.data.Dataset):
            batches, steps = dataset_batches(x), _known_steps(x)
        else:
            batches = array_batches(x, y, sample_weight, batch_size)
            steps = -(-len(x) // batch_size)
        views = self._store_views(batches, limit, steps=steps)
        train = views[0]
        if batch_size is None and train.uneven:
            raise FallbackError(
                "the training dataset's batches differ in size before the "
                "last one, and the cache trains on batches of one size. "
                "Batch the dataset once (e.g. .unbatch().batch(32)) to cache it."
            )
        val = None
        if validation is not None:
            if isinstance(validation, tf.data.Dataset):
                batches = dataset_batches(validation)
            else:
                vx, vy, vsw = (tuple(validation) + (None,))[:3]
                batches = array_batches(
                    vx, vy, vsw, validation_batch_size or batch_size or train.batch_size
                )
            used = sum(v.nbytes for v in views)
            val = self._store_views(batches, max(limit - used, 0), training=False)[0]
        return views, val

    def _frozen_ops(self, phase_plans):
        """The layers with weights that compute the cached tensors of `phase_plans`."""
        needed = {key for phase_plan in phase_plans for key in phase_plan.cut_ids}
        ops = {}
        for step in reversed(self.plan.prefix):
            if needed & set(step.outputs):
                needed |= set(step.inputs)
                if step.weighted:
                    ops[id(step.op)] = step.op
        return list(ops.values())

    def refresh_features(self):
        """Computes the features again if the frozen weights changed since (once per fit).

        Called at the first epoch, after every other callback's hooks:
        `BackupAndRestore` (in `on_train_begin`) may have restored frozen
        weights other than those the features were computed with. Only the
        phases still to come count: layers that trained before the backup
        belong to phases that are over.
        """
        if self._checksums is None:
            return False
        saved, self._checksums = self._checksums, None
        inputs, self._inputs = self._inputs, None
        current = weight_checksums(self._frozen_ops(self.plan.phase_plans[self._earliest :]))
        if all(saved[key] == value for key, value in current.items()):
            return False
        start = time.perf_counter()
        if self._verbose != 0:
            print_msg(
                "The frozen weights changed as training began (a backup "
                "restored?): computing the cached features again."
            )
        old_directories = [b.directory for b in self._views] + [
            source.batches.directory for source in self._sources[1:]
        ]
        self._views = []
        for source in self._sources:
            source.batches = None  # Frees their memory during the pass.
        views, val = self._compute(*inputs)
        rename = {name: name for name in self.plan.keys.values()}
        self._views, self._rename = views, rename
        for source, batches in zip(self._sources, (views[0], val)):
            source.use(batches, rename)
        if self._owns_features:
            for directory in old_directories:
                if directory is not None:
                    shutil.rmtree(directory, ignore_errors=True)
        self._owns_features = True
        info = feature_cache_info(self.model)
        object.__setattr__(
            self.model,
            INFO_ATTRIBUTE,
            dataclasses.replace(
                info,
                storage=_storage(views, val),
                seconds=info.seconds + time.perf_counter() - start,
                reused=False,
                recomputed=True,
            ),
        )
        return True

    def _boundary_names(self, phase_plan):
        return tuple(self.plan.graph.name_of(k) for k in phase_plan.cut_ids)

    def select_view(self, epoch):
        """Points the training pipeline at the augmented view of `epoch` (`epoch % views`)."""
        if len(self._views) > 1:
            self._sources[0].use(self._views[epoch % len(self._views)], self._rename)

    def _store_views(self, batches, limit, training=True, steps=None):
        """The features of `batches`, one `FeatureBatches` per view, in one pass over them.

        Each image is read once and run through the prefix once per view
        (training data: `plan.views`; validation: one, unaugmented); the
        views share `limit` equally (each spills to disk past its share).
        """
        count = self.plan.views if training else 1
        augment = count > 1
        label = "train" if training else "validation"
        if self._extract is None:
            self._extract = make_extractor(self.model, self.plan)
        stores = [
            FeatureBatches(self._spill_directory, label, limit // count) for _ in range(count)
        ]
        # The pass can take minutes on CPU: show it, as fit shows its epochs.
        progress = (
            keras.utils.Progbar(steps, unit_name="batch")
            if self._verbose == 1 and training
            else None
        )
        for step, (images, y, sample_weight) in enumerate(batches, 1):
            # A one-input model also takes its input in a dict or list.
            images = keras.tree.flatten(images)[0]
            for store in stores:
                store.add(self._extract(images, augment), y, sample_weight)
            if progress is not None:
                progress.update(step)
        for store in stores:
            store.finish()
        return stores

    def evaluate_validation(self, **kwargs):
        """`model.evaluate` on the cached validation features of the current phase, or None.

        The features are those the validation of every epoch reads: the
        frozen part of the model is constant during the fit, so the result
        is that of `model.evaluate` on the validation images, without a
        pass over them.
        """
        if len(self._sources) < 2:
            return None
        source = self._sources[1]
        return self.model.evaluate(source.dataset(source.batches.batch_size), **kwargs)

    def _spill_directory(self):
        if self._directory is None:
            self._directory = tempfile.mkdtemp(
                prefix="keras_transfer_features_", dir=self.model.cache_dir
            )
        return self._directory

    def close(self):
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    # --- training steps

    def select_phase_plan(self):
        """Picks the most frozen phase_plan whose cached tensors are constant now."""
        graph = self.plan.graph
        constant = graph.constant_ids(trains_now)
        for index, phase_plan in enumerate(self.plan.phase_plans):
            if index >= self._earliest and all(k in constant for k in phase_plan.cut_ids):
                changed = phase_plan is not self.phase_plan
                self.phase_plan = phase_plan
                self._earliest = index
                return changed
        trained = sorted(
            {s.op.name for s in self.plan.prefix if s.op is not None and trains_now(s.op)}
        )
        raise ConfigurationError(
            f"Layer(s) {trained} of model {self.model.name!r} became trainable "
            "during a fit that cached their outputs, so they would not train. "
            "Unfreeze layers with keras_transfer.ProgressiveUnfreeze (the cache "
            "follows its schedule), or build the model with "
            "cache_frozen_features=False."
        )

    def forward(self, inputs, training):
        if any(isinstance(v, keras.KerasTensor) for v in inputs.values()):
            # Keras builds metrics from a symbolic batch: only shapes matter.
            output = self.model.outputs[0]
            batch = next(iter(inputs.values())).shape[0]
            return keras.KerasTensor((batch,) + tuple(output.shape[1:]), output.dtype)
        values = {}
        for key in self.phase_plan.cut_ids:
            values[key] = inputs[self.plan.keys[key]]
        for step in self.phase_plan.suffix:
            step.run(values, training)
        outputs = [values[k] for k in self.plan.graph.output_ids]
        if len(outputs) == 1:
            return outputs[0]
        return keras.tree.pack_sequence_as(self.model.output, outputs)


class PhaseSwitch(keras.callbacks.Callback):
    """Switches the traced steps to the phase_plan of each epoch's phase.

    Runs after every other callback, so after `ProgressiveUnfreeze` changed
    what trains, and after `BackupAndRestore` restored weights (at the first
    epoch it computes the features again if frozen weights changed).
    """

    def __init__(self, session):
        super().__init__()
        self._session = session

    def on_epoch_begin(self, epoch, logs=None):
        changed = self._session.select_phase_plan()
        # The pipelines read the new features from this epoch on; the traced
        # steps do not depend on them.
        self._session.refresh_features()
        self._session.select_view(epoch)
        if changed:
            self.model.make_train_function(force=True)
            # Validation reads the cache of the current phase too.
            self.model.test_function = None


def _split_validation(kw):
    """`(x, y, sample_weight, validation)`, with `validation_split` of arrays done as Keras does.

    Keras' split: the last fraction of the arrays, before shuffling.
    """
    x, y, sample_weight = kw["x"], kw["y"], kw["sample_weight"]
    validation = kw["validation_data"]
    if not (is_array(x) and kw["validation_split"] and validation is None):
        return x, y, sample_weight, validation
    x, y, sample_weight = (None if v is None else np.asarray(v) for v in (x, y, sample_weight))
    split = int(math.floor(len(x) * (1.0 - kw["validation_split"])))
    validation = (
        x[split:],
        slice_structure(y, split, None),
        slice_structure(sample_weight, split, None),
    )
    return (
        x[:split],
        slice_structure(y, 0, split),
        slice_structure(sample_weight, 0, split),
        validation,
    )


def _describe_cache(info, store):
    """The line a verbose cached fit prints once its features are ready."""
    where = "in memory" if info.storage == "memory" else "on disk"
    done = (
        f"Reused the frozen features of an earlier fit ({store.describe()})"
        if info.reused
        else "Cached frozen features"
        + (f" ({info.views} augmented views)" if info.views > 1 else "")
    )
    then = f" (then {', '.join(info.boundaries[-1])})" if len(info.boundaries) > 1 else ""
    return (
        f"{done}: {info.samples:,} training and "
        f"{info.validation_samples:,} validation samples in {info.seconds:.1f} s "
        f"({info.nbytes / 2**20:,.1f} MiB {where}); the training steps "
        f"start from {', '.join(info.boundaries[0])}{then}."
    )


def _storage(views, val):
    stores = list(views) + ([val] if val is not None else [])
    return "disk" if any(b.storage == "disk" for b in stores) else "memory"


def _has_callbacks(callbacks):
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = callbacks.callbacks
    return bool(callbacks)


def _with_callback(callbacks, callback):
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks.append(callback)
        return callbacks
    return list(callbacks or []) + [callback]


def _known_steps(dataset):
    """The number of batches of a finite dataset, or None when tf.data cannot tell."""
    steps = int(dataset.cardinality())
    return steps if steps >= 0 else None
