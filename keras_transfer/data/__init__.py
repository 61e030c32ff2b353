"""Image data: folder-per-class trees as datasets, and dataset checks.

```python
train_ds, val_ds, class_names = keras_transfer.data.load_image_folder(
    "flower_photos", image_size=160)
keras_transfer.data.check_dataset_for_model(train_ds, model)
```

- `folder`: `scan_image_folder`, `ImageFolderInfo`, `IMAGE_EXTENSIONS`: the
  classes and usable images of a folder, checked before anything trains.
- `images`: `decode_image_file`, the one decoder of every image file
  (upright, antialiased, `resize`: stretch, crop or pad).
- `decoding`: which files that decoder can read, checked once per file.
- `split`: the stratified, deterministic train/validation split.
- `loading`: `load_image_folder`, the `tf.data` pipeline.
- `checks`: `check_dataset_for_model`, labels against a classifier's outputs.
"""

from keras_transfer.data.checks import check_dataset_for_model
from keras_transfer.data.folder import IMAGE_EXTENSIONS
from keras_transfer.data.folder import ImageFolderInfo
from keras_transfer.data.folder import scan_image_folder
from keras_transfer.data.images import RESIZE_MODES
from keras_transfer.data.images import decode_image_file
from keras_transfer.data.loading import load_image_folder

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolderInfo",
    "RESIZE_MODES",
    "check_dataset_for_model",
    "decode_image_file",
    "load_image_folder",
    "scan_image_folder",
]
