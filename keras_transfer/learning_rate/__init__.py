"""The learning-rate finder: a range test on the head, and the rate it suggests.

```python
finding = keras_transfer.find_learning_rate(model, train_ds, plot="lr.png")
model.optimizer.learning_rate = finding.suggestion
```

- `range_test`: `find_learning_rate`, the range test through the model's `fit`.
- `loss_curve`: `LearningRateFinding` (the curve, its plot), `suggest` (the
  rules), `smooth`, `describe`.
"""

from keras_transfer.learning_rate.range_test import find_learning_rate
from keras_transfer.learning_rate.loss_curve import RULES
from keras_transfer.learning_rate.loss_curve import LearningRateFinding
from keras_transfer.learning_rate.loss_curve import describe
from keras_transfer.learning_rate.loss_curve import smooth
from keras_transfer.learning_rate.loss_curve import suggest

__all__ = [
    "RULES",
    "LearningRateFinding",
    "describe",
    "find_learning_rate",
    "smooth",
    "suggest",
]
