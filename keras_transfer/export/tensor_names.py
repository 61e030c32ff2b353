"""Dropping the internal tensor names of a `.tflite` file: a smaller file that computes the same.

TensorFlow's converter names each tensor after every Keras op fused into
it, joined by `;` (`.../block_13_depthwise_relu_1/Relu6;.../batchnorm/add_1;...`,
up to 700 characters): 48 KB for MobileNetV2 0.5, a twentieth of its int8
file, used by nothing that runs the file. `drop_tensor_names` rewrites the
file without them through `ai_edge_litert`'s flatbuffer tools, the same
change as LiteRT's own `strip_strings` but keeping what an app calls the
file by: the names of the graph's input and output tensors and the
`serving_default` signature (`strip_strings` removes the signatures).
Operators, weights and quantization parameters are copied unchanged, so
the outputs are bit for bit those of the converter's file (tested).
"""

import importlib


def drop_tensor_names(path):
    """Rewrites the `.tflite` file `path` without the names of its internal tensors.

    Kept: every subgraph's input and output tensor names, the signatures
    (`get_signature_runner()` works as before), the metadata. Without
    `ai_edge_litert` (pip extra `litert`) the file is left as converted.

    Example:

    ```python
    model.export("flowers.tflite", format="litert")
    drop_tensor_names("flowers.tflite")  # True: 2,806,424 -> 2,755,392 bytes for MobileNetV2 0.5
    ```

    Args:
        path: a `.tflite` file; rewritten in place.

    Returns:
        True if the names were dropped, False if `ai_edge_litert` is missing.
    """
    try:
        flatbuffers = importlib.import_module("ai_edge_litert.tools.flatbuffer_utils")
    except ImportError:
        return False
    model = flatbuffers.read_model(path)
    for subgraph in model.subgraphs:
        # Interpreters report these names in get_input_details(); keep them.
        kept = set(subgraph.inputs) | set(subgraph.outputs)
        for index, tensor in enumerate(subgraph.tensors):
            if index not in kept:
                tensor.name = None
    flatbuffers.write_model(model, path)
    return True
