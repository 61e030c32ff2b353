"""keras-transfer: transfer learning for image classification inside one Keras 3 `fit`."""

__version__ = "0.1.0"
