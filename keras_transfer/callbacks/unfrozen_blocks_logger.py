"""`UnfrozenBlocksLogger`: the freeze depth in effect, as an epoch log.

A search compares trials by the logs of their best epoch; this callback adds
to each epoch's logs how many backbone blocks were trainable in it, so that
a trial whose budget ended before its unfreeze epoch shows as not
fine-tuned.
"""

import keras

from keras_transfer.unfreeze.phase import current_phase

# Epoch log written by every `TransferHyperModel` trial: the blocks actually
# trainable in that epoch. KerasTuner keeps the logs of a trial's best epoch,
# so a trial whose budget ended before `unfreeze_epoch` records 0 here,
# whatever its `unfreeze_blocks` says.
UNFROZEN_BLOCKS_LOG = "unfrozen_blocks"


class UnfrozenBlocksLogger(keras.callbacks.Callback):
    """Adds `unfrozen_blocks` (the depth in effect) to each epoch's logs.

    The depth is the one the running `ProgressiveUnfreeze` published for the
    epoch (`keras_transfer.unfreeze.current_phase`), 0 without one. Put it
    after `ProgressiveUnfreeze` and before the callbacks that read the logs
    (checkpoints, `EarlyStopping`, a tuner's), as `TransferHyperModel.fit`
    does. It holds no state of its own, so a tuner may copy it per trial.

    Example:

    ```python
    model.fit(x, y, epochs=4, callbacks=[
        keras_transfer.ProgressiveUnfreeze(schedule={2: 3}),
        UnfrozenBlocksLogger(),
    ])
    model.history.history["unfrozen_blocks"]  # [0.0, 0.0, 3.0, 3.0]
    ```
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        phase = current_phase(self.model)
        logs[UNFROZEN_BLOCKS_LOG] = float(phase.depth if phase is not None else 0)
