"""keras-transfer: transfer learning for image classification inside one Keras 3 `fit`.

The sub-packages, from the bottom of the stack up (docs/architecture.md):
`errors`, `defaults`, `utils` < `backbones`, `data` < `layers` < `unfreeze`
< `caching` < `models` < `callbacks` < `learning_rate`, `export` < `tuner`,
`experiment`, `evaluation` < `cli`.
"""

__version__ = "0.1.0"

from keras_transfer import backbones
from keras_transfer import caching
from keras_transfer import callbacks
from keras_transfer import data
from keras_transfer import defaults
from keras_transfer import errors
from keras_transfer import evaluation
from keras_transfer import export
from keras_transfer import layers
from keras_transfer import learning_rate
from keras_transfer import models
from keras_transfer import unfreeze
from keras_transfer.backbones import BackboneSpec
from keras_transfer.backbones import get_backbone
from keras_transfer.backbones import list_backbones
from keras_transfer.backbones import register_backbone
from keras_transfer.backbones import unregister_backbone
from keras_transfer.backbones import weights
from keras_transfer.callbacks import GradualSchedule
from keras_transfer.callbacks import PhaseTimer
from keras_transfer.callbacks import ProgressiveUnfreeze
from keras_transfer.data import check_dataset_for_model
from keras_transfer.data import load_image_folder
from keras_transfer.evaluation import evaluate
from keras_transfer.evaluation import predict_images
from keras_transfer.experiment import run_comparison
from keras_transfer.export import export_model
from keras_transfer.layers import BackbonePreprocessing
from keras_transfer.layers import ClassifierHead
from keras_transfer.learning_rate import find_learning_rate
from keras_transfer.models import TransferClassifier
from keras_transfer.models import build_classifier
from keras_transfer.tuner import TransferHyperModel
from keras_transfer.tuner import search_in_subprocesses
from keras_transfer.unfreeze import UnfreezePlan
