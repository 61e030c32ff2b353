"""The class names that travel with an export: `labels.txt` files and ONNX metadata.

Every export carries the model's class names, in the order of its outputs:

| format | where |
|---|---|
| `saved_model` | the `serving_default` signature's `classes` output, and `labels.txt` in the folder |
| `litert` | `<name>.labels.txt` beside `<name>.tflite` |
| `onnx` | the model's `metadata_props["class_names"]` (a JSON list), and `<name>.labels.txt` |

A `.tflite` file carries no names inside: TFLite's metadata writer
(`tflite-support`, last released in 2023) needs `protobuf<4`, TensorFlow
2.21 `protobuf>=6.31.1`: they cannot be installed together. The labels file has one name a line, line
`i` naming output `i`, the format TFLite's and MediaPipe's label files use.
"""

import json
import os

from keras_transfer.layers import class_names_of

# The ONNX `metadata_props` key that holds the class names.
ONNX_CLASS_NAMES_KEY = "class_names"


def export_class_names(model):
    """The names of `model`'s outputs: its class names, or `"0"`, `"1"`, ... without them.

    Example:

    ```python
    export_class_names(model)  # ['daisy', 'dandelion', 'roses', 'sunflowers', 'tulips']
    ```
    """
    names = class_names_of(model)
    if names is None:
        names = [str(i) for i in range(int(model.outputs[0].shape[-1]))]
    return [str(name) for name in names]


def labels_path(path, format):
    """Where the labels file of the export at `path` goes.

    Example:

    ```python
    labels_path("out/flowers.tflite", "litert")  # 'out/flowers.labels.txt'
    labels_path("out/flowers_saved_model", "saved_model")  # 'out/flowers_saved_model/labels.txt'
    ```
    """
    if format == "saved_model":
        return os.path.join(path, "labels.txt")
    # Named after the file: two exports in one folder keep their own labels.
    return os.path.splitext(path)[0] + ".labels.txt"


def write_labels(path, class_names):
    """Writes `class_names` to the text file `path`, one a line.

    Example:

    ```python
    write_labels("flowers.labels.txt", ["daisy", "roses"])
    ```
    """
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{name}\n" for name in class_names))
    return path


def add_onnx_class_names(path, class_names):
    """Stores `class_names` in the `metadata_props` of the `.onnx` file `path`, in place.

    Example:

    ```python
    add_onnx_class_names("flowers.onnx", ["daisy", "roses"])
    onnxruntime.InferenceSession("flowers.onnx").get_modelmeta().custom_metadata_map
    # {'class_names': '["daisy", "roses"]'}
    ```
    """
    import onnx  # tf2onnx's own dependency: there whenever ONNX export is.

    proto = onnx.load(path)
    for entry in list(proto.metadata_props):
        if entry.key == ONNX_CLASS_NAMES_KEY:
            proto.metadata_props.remove(entry)
    proto.metadata_props.add(key=ONNX_CLASS_NAMES_KEY, value=json.dumps(class_names))
    onnx.save(proto, path)
