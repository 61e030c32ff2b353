"""The settings of the `tf.data` pipelines keras-transfer builds: fixed parallelism, no autotuning.

tf.data's autotuner (`AUTOTUNE` parallelism and prefetch buffers) left the
reader of these pipelines idle for seconds at a time on 2 CPU cores: a pass
of MobileNetV2 0.5 over the 2,500 flower photos read through the autotuned
pipeline took 41.0 s of wall time for 26-28 s of CPU, in each of 3 runs; the
same steps with the autotuner off took 26.8-28.4 s, for as much CPU
(`benchmarks/pipeline_autotuning.py`). A fit's first step after a new
iterator over the cached features waited 2-10 s the same way. The pipelines
here therefore run with the autotuner off, a map as parallel as the cores
the process may use, and a prefetch of `PREFETCH_BATCHES`.

A pipeline built on one of them inherits the setting (tf.data options pass
downstream): its own `AUTOTUNE` maps then run on as many threads as there
are cores.
"""

import os

# Batches read ahead of the consumer: one being consumed, one ready.
PREFETCH_BATCHES = 2


def parallel_calls():
    """Elements a `map` works on at once: the cores this process may run on.

    Example:

    ```python
    dataset.map(decode, num_parallel_calls=parallel_calls())
    ```
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def prefetched(dataset):
    """The last step of a pipeline here: a prefetch of `PREFETCH_BATCHES`, the autotuner off.

    Example:

    ```python
    import tensorflow as tf

    dataset = prefetched(tf.data.Dataset.range(8).batch(2))
    ```
    """
    return without_autotuning(dataset.prefetch(PREFETCH_BATCHES))


def without_autotuning(dataset):
    """`dataset` with tf.data's autotuner turned off (see the module docstring).

    Example:

    ```python
    import tensorflow as tf

    dataset = without_autotuning(tf.data.Dataset.range(8).prefetch(PREFETCH_BATCHES))
    dataset.options().autotune.enabled  # False
    ```
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
