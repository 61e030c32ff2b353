"""`keras-transfer export MODEL`: a trained classifier as a SavedModel, LiteRT or ONNX artifact.

The artifact takes raw RGB pixels in [0, 255] at the model's input size (the
preprocessing is a layer of the model, so it is exported too) and returns
the class probabilities. Before it is kept it is run by its own runtime and
compared with the Keras model (`keras_transfer.export.export_model`). The
options are in `export_arguments`, parsed before TensorFlow loads.
"""

import os

from keras_transfer.evaluation import load_classifier
from keras_transfer.export import FORMATS
from keras_transfer.export import check_format
from keras_transfer.export import export_model


def export_command(args):
    """Exports and checks the model; returns None (exit 0).

    Raises:
        KerasTransferError: the model is not a keras-transfer classifier, the
            output cannot be written, the format's converter or runtime is not
            installed, or the export disagrees with the model.
    """
    output = args.output or default_output(args.model, args.format)
    # Before loading the model: a missing converter should not cost a load.
    check_format(args.format, output)
    model, _ = load_classifier(args.model)
    result = export_model(model, output, format=args.format)
    print(
        f"Exported {args.model} to {result.path} ({result.format}); its outputs "
        f"differ from the Keras model's by at most {result.max_difference:.1g} "
        f"on {result.checked_images} test images."
    )


def default_output(model_path, format):
    """Where `export` writes when `--output` is not given.

    Example:

    ```python
    default_output("runs/flowers.keras", "litert")  # 'runs/flowers.tflite'
    ```
    """
    stem = os.fspath(model_path)
    if stem.endswith(".keras"):
        stem = stem[: -len(".keras")]
    suffix = FORMATS[format][1]
    return stem + (suffix or "_saved_model")
