"""KerasHub presets: loading one, failing fast offline, and its image converter.

`load_preset` is `keras_hub.models.Backbone.from_preset` with an offline
check first: a preset that is neither in KerasHub's cache (kagglehub's
`$KAGGLEHUB_CACHE`, or huggingface_hub's for `hf://` handles) nor
downloadable fails at once with one `WeightsError` naming that folder and
how to pass a local preset directory instead, rather than after KerasHub's
retries with a message that names neither.
"""

import os
import urllib.parse

from keras_transfer.backbones import weights as weights_lib
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import WeightsError

try:
    import keras_hub
except ImportError:  # the [hub] extra is not installed
    keras_hub = None

# Where each kind of preset handle downloads from, for the offline check.
_HOSTS = {"kaggle": "https://api.kaggle.com", "hf": "https://huggingface.co"}


def load_preset(preset, load_weights=True, **kwargs):
    """`keras_hub.models.Backbone.from_preset`, failing fast and clearly offline.

    Example: `backbone = load_preset("resnet_50_imagenet")`.

    Raises:
        WeightsError: the preset is not cached and its host cannot be
            reached (names the cache folder and the fix), or loading failed.
    """
    require_keras_hub()
    if not os.path.isdir(preset):
        cache, host = preset_location(preset)
        if cache is not None and not os.path.isdir(cache) and not weights_lib.reachable(host):
            raise weights_lib.keras_hub_preset_error(
                preset, cache, urllib.parse.urlsplit(host).hostname
            )
    try:
        return keras_hub.models.Backbone.from_preset(preset, load_weights=load_weights, **kwargs)
    except Exception as e:  # KerasHub raises ValueError, OSError, requests errors...
        raise WeightsError(
            f"Could not load KerasHub preset {preset!r}: {str(e).splitlines()[0]}. "
            "Pass a built-in preset name, a kaggle:// or hf:// handle, or the path of a "
            "local preset directory (config.json and model.weights.h5)."
        ) from e


def preset_location(preset):
    """Where a preset is cached once downloaded, and where it downloads from.

    Example:

    ```python
    preset_location("vit_base_patch16_224_imagenet")
    # ('~/.cache/kagglehub/models/keras/vit/keras/vit_base_patch16_224_imagenet/4',
    #  'https://api.kaggle.com')
    ```

    Returns:
        `(folder, host URL)`, or `(None, None)` for a handle whose cache
        this does not know (`gs://`, `modelscope://`).
    """
    handle = preset
    presets = keras_hub.models.Backbone.presets
    if preset in presets:
        handle = presets[preset]["kaggle_handle"]
    scheme, _, path = handle.partition("://")
    parts = path.strip("/").split("/")
    if scheme == "kaggle" and len(parts) in (4, 5):
        base = os.environ.get("KAGGLEHUB_CACHE") or os.path.join(
            os.path.expanduser("~"), ".cache", "kagglehub"
        )
        return os.path.join(base, "models", *parts), _HOSTS["kaggle"]
    if scheme == "hf" and len(parts) == 2:
        home = os.environ.get("HF_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache", "huggingface"
        )
        hub_cache = os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub")
        return os.path.join(hub_cache, f"models--{parts[0]}--{parts[1]}"), _HOSTS["hf"]
    return None, None


def preset_converter(preset):
    """The preset's `keras_hub.layers.ImageConverter`.

    Example: `preset_converter("resnet_50_imagenet").scale`.

    Raises:
        ConfigurationError: the preset has none; pass `image_converter=`.
    """
    try:
        return keras_hub.layers.ImageConverter.from_preset(preset)
    except Exception as e:  # no converter in the preset, or a text model
        raise ConfigurationError(
            f"KerasHub preset {preset!r} has no image converter ({e}); pass "
            "image_converter=keras_hub.layers.ImageConverter(scale=..., offset=...)."
        ) from e


def require_keras_hub():
    """Raises `ConfigurationError` with the install command unless keras-hub imports.

    Example: `require_keras_hub()` before the first use of `keras_hub`.
    """
    if keras_hub is None:
        raise ConfigurationError(
            "KerasHub backbones need the keras-hub package: pip install "
            "'keras-transfer[hub]' (or pip install keras-hub)."
        )
