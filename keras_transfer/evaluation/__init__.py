"""Using a trained classifier: predictions for image files, scores on a labelled folder.

```python
model = keras.saving.load_model("flowers.keras")
result = keras_transfer.predict_images(model, ["photos/"], top_k=3)
scores = keras_transfer.evaluate(model, test_ds)
```

- `classifier_file`: `load_classifier`, `check_classifier`, `ClassifierInfo`:
  a saved model checked to be a keras-transfer classifier, its input size
  and class names.
- `prediction`: `predict_images`, the top classes of image files, decoded
  by the training pipeline.
- `scoring`: `evaluate` and `Evaluation`, accuracy, per-class precision,
  recall, F1 and the confusion matrix; classes matched by name.
- `confusion_plot`: `write_confusion_matrix_png`.
- `tta`: `predict_with_tta`, probabilities averaged over an image and its
  mirror (test-time augmentation); `evaluate(..., tta=True)`.

It sits beside `tuner` and `experiment`: it imports models, layers and data,
never the command line.
"""

from keras_transfer.evaluation.classifier_file import ClassifierInfo
from keras_transfer.evaluation.classifier_file import check_classifier
from keras_transfer.evaluation.classifier_file import load_classifier
from keras_transfer.evaluation.confusion_plot import write_confusion_matrix_png
from keras_transfer.evaluation.prediction import DEFAULT_TOP_K
from keras_transfer.evaluation.prediction import ImagePrediction
from keras_transfer.evaluation.prediction import Predictions
from keras_transfer.evaluation.prediction import find_images
from keras_transfer.evaluation.prediction import predict_images
from keras_transfer.evaluation.scoring import Evaluation
from keras_transfer.evaluation.scoring import evaluate
from keras_transfer.evaluation.scoring import match_class_names
from keras_transfer.evaluation.tta import predict_with_tta

__all__ = [
    "DEFAULT_TOP_K",
    "ClassifierInfo",
    "Evaluation",
    "ImagePrediction",
    "Predictions",
    "check_classifier",
    "evaluate",
    "find_images",
    "load_classifier",
    "match_class_names",
    "predict_images",
    "predict_with_tta",
    "write_confusion_matrix_png",
]
