"""Where a comparison ran: the machine and library versions its times depend on."""

import os
import platform

import keras


def describe_machine():
    """The system, CPU, GPUs, load and versions, as a JSON-ready dict.

    Example:

    ```python
    describe_machine()["cpus"]  # e.g. 8
    ```
    """
    # Slow to import; only a comparison about to run needs it.
    import tensorflow as tf

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count()
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        load = None
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(device)
            gpus.append(details.get("device_name") or device.name)
        except (ValueError, RuntimeError):
            gpus.append(device.name)
    return {
        "system": f"{platform.system()} {platform.machine()}",
        "processor": _cpu_model() or platform.processor() or "unknown CPU",
        "cpus": cpus,
        "load_average": load,
        "gpus": gpus,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def machine_text(machine):
    """One sentence for the report from a `describe_machine()` dict.

    Example:

    ```python
    machine_text(describe_machine())
    # "Linux x86_64, Intel(R) Xeon(R) ..., 8 CPU cores, ..., no GPU; ..."
    ```
    """
    accelerators = ", ".join(machine["gpus"]) if machine["gpus"] else "no GPU"
    load = machine.get("load_average")
    load_text = "" if load is None else f", load average {load:g} at the start"
    return (
        f"{machine['system']}, {machine['processor']}, {machine['cpus']} CPU cores"
        f"{load_text}, {accelerators}; Python {machine['python']}, TensorFlow "
        f"{machine['tensorflow']}, Keras {machine['keras']}."
    )


def _cpu_model():
    # platform.processor() is often empty or just "x86_64" on Linux.
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
