"""keras-transfer: transfer learning for image classification inside one Keras 3 `fit`."""

__version__ = "0.1.0"

from keras_transfer import backbones
from keras_transfer import caching
from keras_transfer import data
from keras_transfer import errors
from keras_transfer import layers
from keras_transfer import models
from keras_transfer.backbones import weights
from keras_transfer.backbones import BackboneSpec
from keras_transfer.backbones import get_backbone
from keras_transfer.backbones import list_backbones
from keras_transfer.backbones import register_backbone
from keras_transfer.callbacks.phase_timer import PhaseTimer
from keras_transfer.callbacks.progressive_unfreeze import GradualSchedule
from keras_transfer.callbacks.progressive_unfreeze import ProgressiveUnfreeze
from keras_transfer.data import check_dataset_for_model
from keras_transfer.data import load_image_folder
from keras_transfer.experiment import run_comparison
from keras_transfer.layers import BackbonePreprocessing
from keras_transfer.layers import ClassifierHead
from keras_transfer.models import TransferClassifier
from keras_transfer.models import build_classifier
from keras_transfer.tuner import search_in_subprocesses
from keras_transfer.tuner import TransferHyperModel
