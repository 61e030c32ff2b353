"""`FlushingTensorBoard`: Keras' TensorBoard callback, on disk after every epoch.

`keras-transfer train --log-dir` writes its curves with it, so that a killed
run keeps the curves of every epoch it finished.
"""

import keras


class FlushingTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback, flushed at the end of every epoch.

    Keras flushes its event files when training ends or every two minutes,
    so a killed run would lose the curves of its last minutes. Takes the
    arguments of `keras.callbacks.TensorBoard`.

    Example:

    ```python
    model.fit(x, y, epochs=5, callbacks=[FlushingTensorBoard("logs/run1")])
    ```
    """

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        # Keras keeps its file writers in `_writers` ("train", "val"), created
        # on first use and with no public accessor.
        for writer in getattr(self, "_writers", {}).values():
            writer.flush()
