"""The library's defaults, in one place.

Every module, the command line and the examples read these, so that a
default changes in one line and the documentation of each stays true.
"""

# The backbone a user gets without choosing: small, fast on CPU, and its
# ImageNet weights are the ones the project's own tests load.
BACKBONE = "mobilenet_v2_050"

# Seed of the train/validation split and of the initialisation.
SEED = 1337

# Fraction of the images held out for validation.
VALIDATION_SPLIT = 0.2

# Backbone learning rate relative to the head's, when units unfreeze.
LR_RATIO = 0.1

# `keras-transfer train`'s recipe: head epochs, then fine-tuning epochs that
# also train the top blocks (at most this many: all of a shallower
# backbone). On the flowers (MobileNetV2 0.5, 224 px, benchmarks/recipes.py)
# 3 + 8 epochs over 8 blocks, keeping the weights averaged over the 8
# (`--keep average`), scored 0.917 on held-out photos over 3 seeds, against
# 0.888 for the previous 5 + 5 over 5 blocks keeping the best epoch, and
# 0.917 for the whole backbone with fresh augmentation in 5.6x the time.
HEAD_EPOCHS = 3
FINE_TUNE_EPOCHS = 8
UNFREEZE_BLOCKS = 8

# How images meet the model's square input: "stretch" (the aspect ratio is
# lost, as in Keras), "crop" (the shorter side to the size, the centre kept:
# ImageNet's evaluation transform) or "pad" (letterboxed). Stored in the
# model file. On the flowers (benchmarks/resize_modes.py, train's recipe at
# 160 px) crop scored 0.901 on held-out photos over seeds 1-3, stretch 0.892
# and pad 0.884; seeds 4-6 confirmed (crop 0.909, stretch 0.897). See
# docs/photos.md.
RESIZE = "crop"
RESIZE_MODES = ("stretch", "crop", "pad")
# What model files and run backups from before `resize` existed used.
LEGACY_RESIZE = "stretch"

# Dropout rate of `ClassifierHead`.
HEAD_DROPOUT = 0.2

# Bytes of cached frozen features kept in memory before spilling to disk.
CACHE_MEMORY_LIMIT = 2 * 2**30

# Batch size of the data loader and the command line.
BATCH_SIZE = 32

# Classes `predict_images` and `keras-transfer predict` report per image.
TOP_K = 3

# Export formats: name -> (Keras' name for it, suffix the path must have).
# Here rather than in `export`, which imports TensorFlow: the command line
# offers the names before it loads.
EXPORT_FORMATS = {
    "saved_model": ("tf_saved_model", ""),
    "litert": ("litert", ".tflite"),
    "onnx": ("onnx", ".onnx"),
}

# The format `export_model` and `keras-transfer export` write by default.
EXPORT_FORMAT = "saved_model"

# `export --quantize`: the LiteRT quantizations offered (TFLiteConverter's
# float16 weights, dynamic-range int8 weights, full-integer int8).
EXPORT_QUANTIZATIONS = ("float16", "dynamic", "int8")
# Images a full-integer (int8) export is calibrated on: TensorFlow's guide
# suggests a few hundred; spread over the classes.
CALIBRATION_IMAGES = 200
# The most a quantized export may lose, in accuracy points, against the
# Keras model on held-out images before `export` says so and exits nonzero.
MAX_ACCURACY_DROP = 1.5
# Class names and scores a SavedModel's `serving_default` signature returns.
SERVING_TOP_K = 5
# `keras-transfer audit` (keras_transfer.audit, figures in docs/audit.md):
# folds of the cross-validation behind the label issues; the cosine
# similarity of centred features from which two images are near duplicates
# (on the flowers, 75 % of the copies recompressed at JPEG quality 50 and
# all mirrored copies reach it, and 36 pairs of the 2,500 photos); the
# fraction of the images listed as outliers.
AUDIT_FOLDS = 5
# The backbones whose pooled features (side by side) the audit reads, and
# their input size: on the flowers with 5 % of the labels flipped, these
# three at 288 px ranked the flipped photos better than MobileNetV2 0.5
# alone at 224 px (in the top K: 84.8 % against 81.1 %, flip seeds 0-2);
# 320 px was no better than 288 (benchmarks/audit.py, docs/audit.md).
AUDIT_BACKBONES = ("mobilenet_v2_050", "mobilenet_v2_035", "mobilenet_v1_025")
AUDIT_IMAGE_SIZE = 288
NEAR_DUPLICATE_THRESHOLD = 0.85
OUTLIER_FRACTION = 0.01
