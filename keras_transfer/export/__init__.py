"""Exporting a classifier for inference without Keras: SavedModel, LiteRT (quantized or not), ONNX.

`export_model` (in `artifact`) writes and checks the artifact; `runtimes`
runs one; `quantization` holds the LiteRT quantizations and their images;
`scoring` the accuracy of a quantized file; `serving` the SavedModel's
class-naming signature; `tensor_names` the smaller LiteRT file without its
internal tensor names; `labels` the class names beside every export.
"""

from keras_transfer.export.artifact import FLOAT32_TOLERANCE
from keras_transfer.export.artifact import FORMATS
from keras_transfer.export.artifact import MIXED_PRECISION_TOLERANCE
from keras_transfer.export.artifact import ExportCheckError
from keras_transfer.export.artifact import ExportResult
from keras_transfer.export.artifact import check_format
from keras_transfer.export.artifact import export_model
from keras_transfer.export.quantization import QUANTIZATIONS
from keras_transfer.export.runtimes import RUNTIMES
from keras_transfer.export.runtimes import run_litert
from keras_transfer.export.runtimes import run_onnx
from keras_transfer.export.runtimes import run_saved_model
from keras_transfer.export.scoring import ExportScore

__all__ = [
    "FLOAT32_TOLERANCE",
    "FORMATS",
    "MIXED_PRECISION_TOLERANCE",
    "QUANTIZATIONS",
    "RUNTIMES",
    "ExportCheckError",
    "ExportResult",
    "ExportScore",
    "check_format",
    "export_model",
    "run_litert",
    "run_onnx",
    "run_saved_model",
]
