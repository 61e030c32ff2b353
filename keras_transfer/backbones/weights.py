"""Resolving a backbone's `weights` argument, offline-safe.

`weights` is None (random initialisation), `"imagenet"` or the path to a
weights file. For `"imagenet"`, Keras looks for a file of a known name in its
cache folder (`$KERAS_HOME/models/`, `~/.keras/models/` by default) and
downloads it when it is missing. On a machine without internet, Keras' own
download fails only after a network timeout and with a message that does not
say which file to copy where. `load_backbone` checks the cache first and, if
the file is missing and the download host cannot be reached within seconds,
raises a `WeightsError` that names the file, the folder, and the
alternatives. A cached file that cannot be what Keras expects (a symbolic
link to nothing, a file that does not open as HDF5: a partial download, a
Git LFS pointer) is reported as such, with the fix, before Keras fails on it.

The messages name the argument as the Python API spells it
(`weights=PATH`); the command line wraps its calls in
`argument_spelling(CLI_SPELLING)` so that they say `--weights PATH`.
"""

import contextlib
import contextvars
import os
import pathlib
import socket
import threading
import urllib.parse
import warnings

import h5py

from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import WeightsError
from keras_transfer.utils.internals import keras_home_for_downloads

# Seconds to wait for the download host before declaring the machine offline.
CONNECT_TIMEOUT = 3.0

# How the messages name the `weights` argument's values: a file, and random
# initialisation.
API_SPELLING = {"path": "weights=PATH", "none": "weights=None"}
CLI_SPELLING = {"path": "--weights PATH", "none": "--weights none"}
_SPELLING = contextvars.ContextVar("keras_transfer_weights_spelling", default=API_SPELLING)


@contextlib.contextmanager
def argument_spelling(spelling):
    """Within the block, the messages of this module spell `weights` as `spelling`.

    Example:

    ```python
    with argument_spelling(CLI_SPELLING):
        model = keras_transfer.build_classifier("mobilenet_v2_050", 5)
    # a WeightsError raised inside says "--weights PATH", not "weights=PATH"
    ```

    Args:
        spelling: a dict like `API_SPELLING`: "path" and "none".
    """
    token = _SPELLING.set(spelling)
    try:
        yield
    finally:
        _SPELLING.reset(token)


def _spelled(key):
    return _SPELLING.get()[key]


def keras_home():
    """The Keras home folder, read from `KERAS_HOME` at call time.

    Keras reads `KERAS_HOME` once, when it is imported; keras-transfer reads it
    on every call so that a value set later (e.g. by a test or a notebook cell)
    is honoured.
    """
    home = os.environ.get("KERAS_HOME")
    if home:
        return home
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = "/tmp"
    return os.path.join(base, ".keras")


def cache_dir():
    """The folder Keras caches downloaded weights in (`$KERAS_HOME/models`)."""
    base = os.path.expanduser(keras_home())
    # Same fallback as keras.utils.get_file for a home it cannot write to.
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    return pathlib.Path(base) / "models"


def imagenet_weights_path(spec, input_shape=None):
    """The file `weights="imagenet"` loads for `spec` at `input_shape`.

    Example:

    ```python
    spec = keras_transfer.get_backbone("mobilenet_v2_050")
    keras_transfer.weights.imagenet_weights_path(spec, (96, 96, 3)).name
    # 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_96_no_top.h5'
    ```

    Returns:
        The path in the Keras cache (it may not exist), or None if the
        backbone has no ImageNet weights.
    """
    filename = spec.weights_filename(input_shape)
    return None if filename is None else cache_dir() / filename


def load_backbone(spec, input_shape=None, weights=None):
    """Builds `spec`'s backbone (no top) and loads its weights.

    Example:

    ```python
    spec = keras_transfer.get_backbone("mobilenet_v2_050")
    backbone = keras_transfer.weights.load_backbone(
        spec, input_shape=(96, 96, 3), weights="imagenet")
    ```

    Args:
        spec: a `BackboneSpec`.
        input_shape: `(height, width, 3)`; None for the spec's default.
        weights: None for random initialisation; `"imagenet"` to load the
            ImageNet weights from the Keras cache (downloading them if the
            host is reachable); or the path to a weights file for this
            architecture (e.g. a file Keras downloaded elsewhere).

    Returns:
        The `keras.Model`, named as `keras.applications` names it.

    Raises:
        WeightsError: the file is missing, cannot be downloaded, or does not
            fit the architecture.
    """
    shape = spec.check_input_shape(input_shape, require_rgb=weights is not None)
    constructor = spec.resolve_constructor()

    def build(weights_arg):
        return constructor(
            include_top=False,
            weights=weights_arg,
            input_shape=shape,
            **spec.constructor_kwargs,
        )

    if weights is None:
        return build(None)
    if not isinstance(weights, (str, os.PathLike)):
        raise ConfigurationError(
            f"weights must be None, 'imagenet' or the path to a weights file. "
            f"Received: weights={weights!r}"
        )
    if weights == "imagenet":
        return _load_imagenet(spec, shape, build)

    path = pathlib.Path(weights).expanduser()
    if path.is_symlink() and not path.exists():
        raise _dangling_link_error(path)
    if not path.is_file():
        raise WeightsError(
            f"Weights file not found: {str(path)!r} (weights={str(weights)!r} for "
            f"backbone {spec.name!r}). Pass an existing file, 'imagenet', or "
            f"{_spelled('none')} for random initialisation."
        )
    return _load_file(spec, path, build)


def _load_file(spec, path, build):
    model = build(None)
    try:
        model.load_weights(str(path))
    except Exception as e:  # Keras raises ValueError, KeyError, OSError...
        raise WeightsError(
            f"Weights file {str(path)!r} does not fit backbone {spec.name!r} "
            f"(built by {spec.constructor} with {spec.constructor_kwargs or 'defaults'}): "
            f"{str(e).rstrip('.')}. Was it saved from another architecture or width? "
            f"Pass a file saved from {spec.name!r} (its ImageNet file is named like "
            f"{spec.weights_filename(None)!r}), 'imagenet', or {_spelled('none')}."
        ) from e
    return model


def _load_imagenet(spec, shape, build):
    path = imagenet_weights_path(spec, shape)
    if path is None:
        raise WeightsError(
            f"Backbone {spec.name!r} has no ImageNet weights registered. Use "
            f"{_spelled('none')} (random initialisation) or {_spelled('path')} to "
            "a weights file."
        )
    fallback = imagenet_weights_path(spec, None)
    for cached in dict.fromkeys((path, fallback)):
        if cached.is_symlink() and not cached.exists():
            raise _dangling_link_error(cached)
    if not path.exists():
        url = spec.weights_url(shape)
        if not reachable(url):
            if fallback.exists():
                _check_hdf5(fallback, spec.weights_url(None))
                # Without top, the weights of every input size have the same
                # shapes; those trained at the default size are a better
                # start than a failure on an offline machine.
                warnings.warn(
                    f"{path.name!r} is not cached and cannot be downloaded; loading "
                    f"{fallback.name!r} (trained at {spec.default_input_size} px) "
                    f"into backbone {spec.name!r} at input shape {shape}.",
                    stacklevel=4,
                )
                return _load_file(spec, fallback, build)
            raise WeightsError(
                f"ImageNet weights for backbone {spec.name!r} are not cached and "
                f"{urllib.parse.urlsplit(url).hostname} cannot be reached (offline?). "
                f"Keras looks for the file {path.name!r} in {str(path.parent)!r} "
                "($KERAS_HOME/models/). Fix: download it from "
                f"{url} on a machine with internet and copy it into that folder"
                + (
                    f" (or {fallback.name!r}, trained at {spec.default_input_size} px, "
                    "which also fits)"
                    if fallback != path
                    else ""
                )
                + f", or pass {_spelled('path')} to the file, or {_spelled('none')} "
                "for random initialisation."
            )
    else:
        _check_hdf5(path, spec.weights_url(shape))
    try:
        # Loading through Keras (rather than from the path) keeps what its
        # constructors do only for "imagenet", e.g. EfficientNet's extra
        # input rescaling; pointing Keras at the call-time KERAS_HOME makes it
        # read (or download into) the folder checked above.
        with keras_home_for_downloads(keras_home()):
            return build("imagenet")
    except Exception as e:
        raise WeightsError(
            f"Could not load the ImageNet weights of backbone {spec.name!r} from "
            f"{str(path)!r}: {e}. Delete the file to download it again, or pass "
            f"{_spelled('path')} to a good copy."
        ) from e


def _dangling_link_error(path):
    target = os.readlink(path)
    return WeightsError(
        f"{str(path)!r} is a symbolic link to {target!r}, which does not exist"
        + (
            f" (a relative link is read from the link's folder, {str(path.parent)!r})"
            if not os.path.isabs(target)
            else ""
        )
        + ". Fix: link to the weights' absolute path, e.g. "
        f'ln -sf "$(realpath WEIGHTS_DIR)"/*.h5 {str(path.parent)!r}/ with '
        "WEIGHTS_DIR the folder that holds the .h5 files, or delete the link "
        f"to download the file again, or pass {_spelled('path')} to the file."
    )


def _check_hdf5(path, url):
    """Raises `WeightsError` unless `path` opens as an HDF5 file."""
    try:
        with h5py.File(path, "r"):
            pass
    except (OSError, ValueError) as e:
        size = path.stat().st_size
        raise WeightsError(
            f"{str(path)!r} ({size} bytes) is not a readable HDF5 weights file "
            f"({str(e).rstrip('.')}): a partial download, or a Git LFS pointer "
            "if it is a few hundred bytes. Fix: replace it with the complete file "
            f"(downloaded from {url}), delete it so that Keras downloads it again, "
            f"or pass {_spelled('path')} to a good copy."
        ) from e


def reachable(url, timeout=CONNECT_TIMEOUT):
    """Whether a TCP connection to `url`'s host opens within `timeout` seconds.

    Bounded even where name resolution stalls (an offline machine), so it
    is safe to ask before a download.

    Example:

    ```python
    keras_transfer.weights.reachable("https://storage.googleapis.com/")
    # False on a machine without internet, after at most 3 seconds
    ```
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result = []

    def probe():
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    # The socket timeout does not cover name resolution, which can stall for
    # much longer offline; the thread's join bounds the whole check.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result) and result[0]


def keras_hub_preset_error(preset, cache_path, host):
    """The one-line `WeightsError` for a KerasHub preset that is neither cached nor reachable.

    `keras_transfer.backbones.hub` raises it before KerasHub's own download
    fails (after its retries, with a message that names neither the cache
    nor the fix).

    Example:

    ```python
    raise keras_hub_preset_error(
        "vit_base_patch16_224_imagenet",
        "~/.cache/kagglehub/models/keras/vit/keras/vit_base_patch16_224_imagenet/4",
        "api.kaggle.com")
    ```

    Args:
        preset: the preset as the user gave it.
        cache_path: the folder KerasHub (through kagglehub or huggingface_hub)
            keeps that preset in once downloaded.
        host: the download host that cannot be reached.
    """
    return WeightsError(
        f"KerasHub preset {preset!r} is not cached and {host} cannot be reached "
        f"(offline?). KerasHub keeps downloaded presets in {str(cache_path)!r} "
        "(kagglehub's cache, $KAGGLEHUB_CACHE, default ~/.cache/kagglehub; "
        "huggingface_hub's, $HF_HOME, for hf:// presets). Fix: run "
        f"keras_hub.models.Backbone.from_preset({preset!r}) on a machine with "
        "internet and copy that folder here, or pass the path of a local preset "
        "directory (config.json and model.weights.h5, e.g. written by "
        "backbone.save_to_preset(path)) instead of the name."
    )
