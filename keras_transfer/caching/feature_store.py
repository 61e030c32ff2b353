"""`FeatureStore`: frozen features kept after a `fit` for later fits that need the same ones."""

import collections

from keras_transfer import defaults
from keras_transfer.caching.sharing_keys import SharedFeatures
from keras_transfer.errors import ConfigurationError


class FeatureStore:
    """Frozen features kept after a `fit`, for later fits that need the same ones.

    A KerasTuner search fits many models that share a frozen backbone and
    the data: each trial's cache pass (one forward pass of the backbone over
    every image) computes what the last trial already had. Give those
    models one `FeatureStore` and every fit after the first reuses the
    features, provided everything that determines them is identical: the
    frozen layers (class, configuration and the bytes of their weights),
    how they are wired from the input to the cached tensor, the input dtype,
    and the data (the bytes of NumPy arrays and tensors; the same
    `tf.data.Dataset` object), batch size and validation split. Anything
    else, e.g. other weights or a changed array, computes and stores anew,
    so a reused feature is always the one the fit would have computed.

    `TransferHyperModel` gives its trials one store (`share_frozen_features`).
    Stored features take memory (or disk, for fits whose features went to
    disk) after their fit returns: the store keeps at most `max_bytes` and
    drops the least recently used entries beyond.

    Example:

    ```python
    x = np.random.uniform(0, 255, (32, 64, 64, 3)).astype("float32")
    y = np.random.randint(0, 2, (32,))
    store = keras_transfer.caching.FeatureStore()
    weights = None
    for rate in (1e-3, 1e-2):
        model = keras_transfer.build_classifier(
            "mobilenet_v2_035", num_classes=2, input_shape=(64, 64, 3),
            weights=None)
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)  # The same frozen backbone for both.
        model.feature_store = store
        model.compile(keras.optimizers.Adam(rate),
                      "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=3, verbose=0)
    store.hits  # 1: the second fit reused the first one's features
    ```

    Args:
        max_bytes: int, the most bytes of features kept; 0 keeps nothing.
            Defaults to 2 GiB.
    """

    def __init__(self, max_bytes=defaults.CACHE_MEMORY_LIMIT):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ConfigurationError(
                f"max_bytes must be a number of bytes >= 0. Received: max_bytes={max_bytes!r}"
            )
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._entries = collections.OrderedDict()  # Least recently used first.
        self._next_id = 0

    def __len__(self):
        return len(self._entries)

    def __repr__(self):
        return f"<FeatureStore {self.describe()}>"

    @property
    def nbytes(self):
        """Bytes of features held now (memory and disk)."""
        return sum(entry.nbytes for entry in self._entries.values())

    def describe(self):
        """One line: entries, size, hits and misses."""
        return (
            f"{len(self)} entries, {self.nbytes / 2**20:,.1f} MiB, "
            f"{self.hits} hits, {self.misses} misses"
        )

    def clear(self):
        """Drops every stored feature (and deletes those on disk)."""
        for entry in self._entries.values():
            entry.release()
        self._entries.clear()

    def lookup(self, key):
        """The stored features that `key` describes, or None (counts a hit or a miss)."""
        for entry_id, entry in list(self._entries.items()):
            if not entry.alive():
                self._entries.pop(entry_id).release()
            elif entry.data == key.data and set(key.cuts.values()) <= entry.names.keys():
                self._entries.move_to_end(entry_id)
                self.hits += 1
                return entry
        self.misses += 1
        return None

    def insert(self, key, train, validation, directory):
        """Keeps a fit's features under `key`; False when they exceed `max_bytes`."""
        nbytes = train.nbytes + (validation.nbytes if validation is not None else 0)
        if nbytes > self.max_bytes:
            return False
        signatures = set(key.cuts.values())
        for entry_id, entry in list(self._entries.items()):
            if entry.data == key.data and entry.names.keys() <= signatures:
                self._entries.pop(entry_id).release()  # Superseded.
        while self._entries and self.nbytes + nbytes > self.max_bytes:
            self._entries.popitem(last=False)[1].release()
        self._entries[self._next_id] = SharedFeatures(
            data=key.data,
            names={sig: key.plan_names[cut] for cut, sig in key.cuts.items()},
            train=train,
            validation=validation,
            nbytes=nbytes,
            datasets=key.datasets,
            directory=directory,
        )
        self._next_id += 1
        return True
