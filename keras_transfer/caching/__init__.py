"""Frozen-feature caching: a frozen layer costs one forward pass per image, not one per epoch.

While the bottom of a backbone is frozen (BatchNormalization in inference
mode, its weights fixed), its output for a given image never changes, yet a
plain `fit` recomputes it at every epoch. `TransferClassifier.fit` (the model
`build_classifier` returns) avoids that without any change to the user's code:

1. It works out which part of the model stays constant for the whole `fit`:
   the layers without trainable weights whose inputs are themselves constant,
   from the input up. With a `ProgressiveUnfreeze` among the callbacks it
   reads the schedule, so that it knows which blocks will train later.
2. It runs that part once over the training and validation images, in
   inference mode, batch by batch, and keeps the tensors where the constant
   part hands over to the trained part: one set per phase of the schedule
   (the backbone's pooled output for the head-only phase, the output of the
   last frozen block for each fine-tuning phase), so the cached boundary
   moves with the unfreezing. They stay in memory up to `memory_limit`
   bytes, and go to disk beyond it (raw files read by row, `np.memmap`, in
   the order the in-memory cache would use).
3. It calls Keras' own `fit` once on those features. Callbacks, `History`,
   `BackupAndRestore`, `EarlyStopping` and `ProgressiveUnfreeze` see one
   ordinary `fit` of the whole model; each training step runs only the part
   of the model that the current phase trains.

Results match uncached training: the cached part is computed exactly as the
uncached step computes it (frozen BatchNormalization layers are in inference
mode either way). One deliberate difference: random layers between the
weighted layers of a frozen backbone (EfficientNet's stochastic depth,
Dropout) run in inference mode, as the `training=False` that
`build_classifier` calls the backbone with intends; Keras 3 otherwise turns
them on (keras-team/keras#20285). Augmentation is not regularisation: Keras'
random preprocessing layers and any random layer before every weighted layer
draw anew each epoch wherever they sit, inside the backbone too (a backbone
fed through `input_tensor=`), see `caching.graph`.

When caching would change the results or cannot work, `fit` trains as usual
and says why in one warning: augmentation (custom layers are called on a
sample batch and their trace read to find out) before frozen layers without
`augmented_views`, uneven `tf.data` batches before the last, random
operations in a `tf.data` pipeline, input types other than arrays or a
finite `tf.data.Dataset`, `steps_per_epoch` or `validation_steps`, a
`tf.distribute` strategy other than `MirroredStrategy`, a
`keras.distribution` other than `DataParallel` in one process (any
`keras.distribution` on TensorFlow), a backend other than TensorFlow and
JAX (PyTorch).
Python generators, `PyDataset` and `tf.data.Dataset.from_generator` are not
inspected for randomness: pass `cache_frozen_features=False` when those
augment their images.

What is cached on which backend:

- TensorFlow: all of the above. The pass is one `tf.function` trace of the
  frozen steps (`caching.extract`); user layers are probed by behaviour
  and by the random ops of their traced graph.
- JAX: the same (the phases of `ProgressiveUnfreeze`, `augmented_views`,
  spilling to disk, `FeatureStore`, `BackupAndRestore`). The pass is one
  `jax.jit` of the frozen steps with the variables' values as arguments
  (`caching.jax_backend`); user layers are probed by behaviour and by the
  random primitives of their jaxpr. The features still reach Keras as a
  `tf.data` pipeline (TensorFlow is installed with every backend), in the
  order in which Keras' JAX trainer shuffles arrays
  (`tests/test_jax_caching.py` compares cached with uncached fits).
- PyTorch: not cached (one warning).

Under `tf.distribute.MirroredStrategy` (a model built in its scope) the pass
runs once, outside the replicas (inference, with weights every replica
shares), and Keras distributes the feature batches as it would the images:
each replica trains on its part of every batch and the gradients are
all-reduced, so a cached fit matches the uncached one (tested on two logical
CPUs). Other strategies (several workers, TPUs, parameter servers) are not
tested, and train uncached. On JAX under `keras.distribution.DataParallel`
likewise: the pass shards each batch over the devices, and Keras shards
the feature batches as it would the images, each device training on its
part of every batch (tested on two host devices against one device and
the uncached fit). `ModelParallel`, and `DataParallel` over several
processes, train uncached.

With the model's `augmented_views=K`, random layers before frozen layers no
longer stop the cache: they count as constant within a view. The pass runs
them in training mode K times per training image (K stores of features,
sharing the memory limit; validation once, unaugmented), and `PhaseSwitch`
points the training pipeline at view `epoch % K` at each epoch.
"""

from keras_transfer import defaults
from keras_transfer.caching.cache_plan import BACKENDS
from keras_transfer.caching.model_hooks import call_on_features
from keras_transfer.caching.model_hooks import evaluate_validation_features
from keras_transfer.caching.model_hooks import fit
from keras_transfer.caching.model_hooks import is_feature_batch
from keras_transfer.caching.info import FeatureCacheInfo
from keras_transfer.caching.info import feature_cache_info
from keras_transfer.caching.info import fit_start_time
from keras_transfer.caching.info import running_cache_info
from keras_transfer.caching.feature_store import FeatureStore

# Bytes of features a `TransferClassifier` keeps in memory before spilling.
DEFAULT_MEMORY_LIMIT = defaults.CACHE_MEMORY_LIMIT

__all__ = [
    "BACKENDS",
    "DEFAULT_MEMORY_LIMIT",
    "FeatureCacheInfo",
    "FeatureStore",
    "call_on_features",
    "evaluate_validation_features",
    "feature_cache_info",
    "fit",
    "fit_start_time",
    "is_feature_batch",
    "running_cache_info",
]
