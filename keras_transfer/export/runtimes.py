"""The runtimes an export is checked with: TensorFlow's SavedModel loader, LiteRT, ONNX Runtime.

Each `run_*` function loads an artifact and returns its outputs on a batch
of raw pixels, as `model.predict` would: what `export_model` compares with
Keras, and what the accuracy of a quantized file is measured with.
`threads` sets the runtime's intra-op threads where it has the option
(`benchmarks/export.py` measures latency with one).
"""

import importlib

import numpy as np
import tensorflow as tf

# Images per call of an interpreter: bounds its memory on a large set.
CHUNK = 32


def run_saved_model(path, images):
    """Runs a SavedModel export on `images` with TensorFlow's loader.

    Example:

    ```python
    probabilities = run_saved_model("flowers_saved_model", images)
    ```
    """
    # The loaded object owns the variables: keep it alive through the call.
    loaded = tf.saved_model.load(path)
    return loaded.serve(tf.constant(images)).numpy()


def litert_interpreter(path, threads=None):
    """A LiteRT interpreter of the `.tflite` file `path` (`ai_edge_litert`'s, else TensorFlow's).

    Example:

    ```python
    interpreter = litert_interpreter("flowers.tflite", threads=1)
    ```
    """
    try:
        interpreter_class = importlib.import_module("ai_edge_litert.interpreter").Interpreter
    except ImportError:
        interpreter_class = tf.lite.Interpreter
    return interpreter_class(model_path=path, num_threads=threads)


def run_litert(path, images, threads=None):
    """Runs a `.tflite` export on `images` with the LiteRT interpreter, `CHUNK` images at a time.

    Example:

    ```python
    probabilities = run_litert("flowers_int8.tflite", images)  # raw pixels in
    ```
    """
    interpreter = litert_interpreter(path, threads)
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    outputs = []
    for start in range(0, len(images), CHUNK):
        batch = images[start : start + CHUNK]
        interpreter.resize_tensor_input(source["index"], batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], batch)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"]))
    return np.concatenate(outputs)


def onnx_session(path, threads=None):
    """An ONNX Runtime session of the `.onnx` file `path` on the CPU.

    Example:

    ```python
    session = onnx_session("flowers.onnx", threads=1)
    ```
    """
    onnxruntime = importlib.import_module("onnxruntime")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_onnx(path, images, threads=None):
    """Runs an `.onnx` export on `images` with ONNX Runtime.

    Example:

    ```python
    probabilities = run_onnx("flowers.onnx", images)
    ```
    """
    session = onnx_session(path, threads)
    return session.run(None, {session.get_inputs()[0].name: images})[0]


# Format -> the function that runs an export of it on a batch of images.
RUNTIMES = {"saved_model": run_saved_model, "litert": run_litert, "onnx": run_onnx}
