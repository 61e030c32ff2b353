"""The Keras, TensorFlow and KerasTuner internals keras-transfer uses, checked on the installed versions.

`docs/private_apis.md` lists each internal; every row there has a check in
`CHECKS` here, run on real objects (`test_internal_is_there[<internal>]`),
and every private name the package reads must be in that list. A newer
library that drops one fails here, naming the internal and where it is used.
"""

import ast
import configparser
import importlib
import importlib.metadata
import inspect
import pathlib
import re
import types
import warnings

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from keras.optimizers.schedules import ExponentialDecay
from packaging.requirements import Requirement

from keras_transfer.callbacks import RunBackup
from keras_transfer.utils import internals

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_transfer"
DOC = ROOT / "docs" / "private_apis.md"
PRIVATE_MODULES = ("keras.src", "tensorflow.python", "keras_tuner.src")
FOREIGN_BASES = ("keras.", "keras_tuner.", "tf.")


def _doc_rows():
    """`{internal: where it is used}` from the tables of docs/private_apis.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0].split("`")[1]] = cells[1]
    return rows


def _module_has(module, name):
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


def _has_all(obj, names):
    return all(hasattr(obj, name) for name in names.split())


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    """One real object of each kind the internals live on."""
    inner_input = keras.Input((4,))
    inner = keras.Model(inner_input, keras.layers.Dense(3)(inner_input), name="inner")
    inputs = keras.Input((4,))
    dropout = keras.layers.Dropout(0.5)
    outputs = keras.layers.Dense(2, name="top")(dropout(inner(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    adam = keras.optimizers.Adam(ExponentialDecay(1e-3, 10, 0.9))
    adam.build(model.trainable_variables)
    multi = keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(keras.optimizers.Adam()))
    multi.build(model.trainable_variables)
    shuffled = tf.data.Dataset.range(8).shuffle(8)
    hp = keras_tuner.HyperParameters()
    hp.Choice("units", [1, 2])
    folder = tmp_path_factory.mktemp("private_apis")
    return types.SimpleNamespace(
        model=model,
        inner=inner,
        dropout=dropout,
        adam=adam,
        multi=multi,
        shuffled=shuffled,
        mapped=shuffled.map(lambda v: v + 1),
        oracle=keras_tuner.oracles.GridSearchOracle(objective="loss", hyperparameters=hp),
        backup=keras.callbacks.BackupAndRestore(str(folder / "backup")),
        tensorboard=keras.callbacks.TensorBoard(str(folder / "logs")),
    )


def _frozen_layer_keeps_its_variables(o):
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    dense.trainable = False
    return not dense.trainable_variables and len(dense._trainable_variables) == 2


def _fit_starts_at_the_initial_epoch_it_is_told(o):
    epochs = []

    class Resume(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.model._initial_epoch = 2

        def on_epoch_begin(self, epoch, logs=None):
            epochs.append(epoch)

    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse", run_eagerly=True)  # Nothing to trace: fast.
    model.fit(np.zeros((2, 1)), np.zeros((2, 1)), epochs=3, verbose=0, callbacks=[Resume()])
    return epochs == [2]


def _tracing_registers_custom_gradients(o):
    registry = internals.tf_ops._gradient_registry._registry
    before = set(registry)

    @tf.custom_gradient
    def identity(v):
        return v, lambda dy: dy

    tf.function(lambda v: identity(v)).get_concrete_function(tf.constant(1.0))
    return any(k.startswith(internals.CUSTOM_GRADIENT_PREFIX) for k in set(registry) - before)


def _map_holds_a_traced_function(o):
    wrappers = [
        v for v in vars(o.mapped).values() if type(v).__name__ == "StructuredFunctionWrapper"
    ]
    return bool(wrappers) and wrappers[0].function.graph.as_graph_def() is not None


def _exclusions_are_kept(o):
    adamw = keras.optimizers.AdamW(weight_decay=0.01)
    adamw.exclude_from_weight_decay(var_names=["bias"])
    return adamw._exclude_from_weight_decay_pattern.search("dense/bias") and isinstance(
        adamw._exclude_from_weight_decay, set
    )


def _loss_scale_records_its_variables(o):
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())
    optimizer.build(o.model.trainable_variables)
    count = len(o.model.trainable_variables)
    recorded = len(optimizer._trainable_variables) == len(optimizer._trainable_variables_indices)
    # Still the list its JAX step zips the gradients with.
    source = inspect.getsource(type(optimizer)._stateless_handle_finite_grads)
    return (
        recorded
        and count == len(optimizer._trainable_variables)
        and ("zip(grads, self._trainable_variables)" in source)
    )


def _first_node(o):
    return next(n for nodes in o.model._nodes_by_depth.values() for n in nodes if not n.is_input)


CHECKS = {
    "keras.src.backend.config._KERAS_DIR": lambda o: _module_has(
        "keras.src.backend.config", "_KERAS_DIR"
    ),
    "keras.src.trainers.data_adapters.array_data_adapter.ArrayDataAdapter": lambda o: (
        [
            b.numpy().tolist()
            for b in internals.ArrayDataAdapter(
                np.arange(3), batch_size=2, shuffle=False
            ).get_tf_dataset()
        ]
        == [[0, 1], [2]]
    ),
    "Layer._flatten_layers": lambda o: (
        "top" in [l.name for l in o.model._flatten_layers()]
        and len(o.model._flatten_layers(include_self=False)) > len(o.model.layers)
    ),
    "Layer._trainable_variables": _frozen_layer_keeps_its_variables,
    "Operation._inbound_nodes/_outbound_nodes": lambda o: (
        bool(o.inner._inbound_nodes) and bool(o.inner._outbound_nodes)
    ),
    "ListWrapper._storage/_update_snapshot": lambda o: (
        isinstance(o.inner._inbound_nodes._storage, list)
        and callable(o.inner._inbound_nodes._update_snapshot)
    ),
    "Functional._nodes_by_depth": lambda o: isinstance(o.model._nodes_by_depth, dict),
    "Node.operation/is_input/input_tensors/outputs/arguments": lambda o: (
        _has_all(_first_node(o), "operation is_input input_tensors outputs")
        and _has_all(_first_node(o).arguments, "args kwargs fill_in")
    ),
    "Model._compiled_trainable_state": lambda o: hasattr(o.model, "_compiled_trainable_state"),
    "Model._initial_epoch": _fit_starts_at_the_initial_epoch_it_is_told,
    "Model.make_train_function/train_function/test_function/predict_function": lambda o: _has_all(
        o.model, "make_train_function train_function test_function predict_function"
    ),
    "BackupAndRestore._load_model/_save_model/_current_epoch": lambda o: _has_all(
        o.backup, "_load_model _save_model _current_epoch"
    ),
    "TensorBoard._writers": lambda o: isinstance(o.tensorboard._writers, dict),
    "MultiOptimizer._optimizer_map/_inner_optimizers/_var_to_optimizer_idx": lambda o: _has_all(
        o.multi, "_optimizer_map _inner_optimizers _var_to_optimizer_idx"
    ),
    "Optimizer._var_key/_iterations/_check_variables_are_known": lambda o: _has_all(
        o.adam, "_var_key _iterations _check_variables_are_known"
    ),
    "Optimizer._get_current_learning_rate": lambda o: (
        float(o.adam._get_current_learning_rate()) == pytest.approx(1e-3)
    ),
    "Optimizer._trainable_variables": lambda o: (
        len(o.adam._trainable_variables) == len(o.model.trainable_variables)
    ),
    "Optimizer._exclude_from_weight_decay/_exclude_from_weight_decay_pattern": _exclusions_are_kept,
    "LossScaleOptimizer._trainable_variables/_trainable_variables_indices": _loss_scale_records_its_variables,
    "tensorflow.python.framework.ops._gradient_registry._registry": _tracing_registers_custom_gradients,
    "Dataset._inputs": lambda o: o.mapped._inputs() == [o.shuffled],
    "ShuffleDataset._reshuffle_each_iteration": lambda o: hasattr(
        o.shuffled, "_reshuffle_each_iteration"
    ),
    "StructuredFunctionWrapper": _map_holds_a_traced_function,
    "GridSearchOracle._ordered_ids/_populate_next/_compare": lambda o: (
        isinstance(o.oracle._ordered_ids._memory, list)
        and hasattr(o.oracle._ordered_ids, "insert")
        and isinstance(o.oracle._populate_next, list)
        and callable(o.oracle._compare)
    ),
    "Oracle.create_trial": lambda o: (
        "oracle.create_trial(" in inspect.getsource(keras_tuner.engine.base_tuner.BaseTuner.search)
    ),
}


@pytest.mark.parametrize("internal", sorted(CHECKS))
def test_internal_is_there(internal, objects):
    try:
        present, detail = CHECKS[internal](objects), ""
    except Exception as error:  # AttributeError, ImportError, a changed type...
        present, detail = False, f" ({type(error).__name__}: {error})"
    assert present, (
        f"{internal} is missing or has changed{detail}; keras-transfer uses it in "
        f"{_doc_rows().get(internal, '?')}. See docs/private_apis.md for its guard, "
        f"and keep setup.cfg's bounds ({internals.SUPPORTED_VERSIONS}) to versions that have it."
    )


def test_every_listed_internal_has_a_check():
    assert sorted(_doc_rows()) == sorted(CHECKS)


def _private_reads(path):
    """`(line, name)` of the private names of other libraries that `path` uses."""
    tree = ast.parse(path.read_text(), str(path))

    def private(name):
        return (
            isinstance(name, str)
            and name.startswith("_")
            and not name.startswith("__")
            and not name.startswith("_keras_transfer")
        )

    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and private(node.attr)
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append((node.lineno, node.attr))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) in ("getattr", "hasattr", "setattr")
            and len(node.args) > 1
            and private(getattr(node.args[1], "value", None))
        ):
            found.append((node.lineno, node.args[1].value))
        elif isinstance(node, ast.ClassDef):
            found += _inherited_private_names(node)
    return found


def _inherited_private_names(cls):
    """Private names a subclass of a library class overrides or reads from its base."""
    bases = [ast.unparse(b) for b in cls.bases if ast.unparse(b).startswith(FOREIGN_BASES)]
    if not bases:
        return []
    base = {"keras": keras, "keras_tuner": keras_tuner, "tf": tf}[bases[0].split(".")[0]]
    for part in bases[0].split(".")[1:]:
        base = getattr(base, part)
    defined = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)} | {
        t.id
        for n in cls.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    assigned, found = set(), []
    for node in ast.walk(cls):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            if isinstance(node.ctx, ast.Store):
                assigned.add(node.attr)
            else:
                found.append((node.lineno, node.attr))
    found = [(line, name) for line, name in found if name not in defined | assigned]
    return found + [
        (n.lineno, n.name)
        for n in cls.body
        if isinstance(n, ast.FunctionDef)
        and n.name.startswith("_")
        and not n.name.startswith("__")
        and hasattr(base, n.name)
    ]


def test_every_private_name_in_the_package_is_listed():
    listed = DOC.read_text()
    unlisted = [
        f"{path.relative_to(ROOT)}:{line} uses {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, name in _private_reads(path)
        if f"{name}" not in listed
    ]
    assert not unlisted, (
        "Private names of Keras/TensorFlow/KerasTuner not listed in docs/private_apis.md "
        "(add a row, a guard in keras_transfer/utils/internals.py if it needs one, and a "
        f"check in CHECKS here): {unlisted}"
    )


def _package_names():
    """What the package's code names: private reads, imported paths, identifiers and strings."""
    private, imported, named, strings = set(), set(), set(), set()
    for path in sorted(PACKAGE.rglob("*.py")):
        private.update(name for _, name in _private_reads(path))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Attribute):
                named.add(node.attr)
            elif isinstance(node, ast.Name):
                named.add(node.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
    # A private name read through getattr with a variable is one of the strings.
    return private | strings, imported, named | strings


def _unused_parts(internal, private, imported, named):
    """The parts of a listed internal (`Owner._a/_b`, `module.path.name`) the package does not use."""
    first, *others = internal.split("/")
    if first.startswith(PRIVATE_MODULES + ("keras_tuner.", "tensorflow.")):
        # A module path, maybe followed by attributes read from it.
        parts = first.split(".")
        for end in range(len(parts), 1, -1):
            module = ".".join(parts[:end])
            if any(i == module or i.startswith(module + ".") for i in imported):
                names = parts[end:] + others
                break
        else:
            return [first]
    else:
        names = [first.split(".")[-1]] + others
    return [name for name in names if name not in (private if name.startswith("_") else named)]


def test_every_listed_internal_is_used():
    # The other direction of test_every_private_name_in_the_package_is_listed:
    # a row whose internal the package no longer reads is a stale promise.
    found = _package_names()
    stale = {
        internal: unused for internal in _doc_rows() if (unused := _unused_parts(internal, *found))
    }
    assert not stale, (
        "docs/private_apis.md lists internals the package no longer uses (remove "
        f"their rows and their CHECKS): {stale}"
    )


def test_private_modules_are_imported_only_by_internals():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "utils" / "internals.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
                for name in names
                if name.startswith(PRIVATE_MODULES)
            ]
    assert not found, f"Import private modules through keras_transfer.utils.internals only: {found}"


def test_supported_versions_match_setup_cfg():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    required = {
        r.name: r.specifier for r in map(Requirement, config["options"]["install_requires"].split())
    }
    supported = {
        r.name: r.specifier
        for r in map(Requirement, re.split(r", | and ", internals.SUPPORTED_VERSIONS))
    }
    assert supported == {name: required[name] for name in supported}
    for name, specifier in supported.items():
        installed = importlib.metadata.version(name)
        assert specifier.contains(installed, prereleases=True), (
            f"{name} {installed} is installed, outside setup.cfg's {specifier}"
        )


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    # Each optional internal warns once per process: start each test afresh.
    monkeypatch.setattr(internals, "_warned", set())


def _one_warning(record, internal):
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and internal in messages[0], messages
    assert internals.SUPPORTED_VERSIONS in messages[0]


def test_optional_internals_degrade_with_one_warning(monkeypatch):
    monkeypatch.setattr(internals, "tf_ops", None)
    monkeypatch.setattr(internals, "keras_config", None)
    monkeypatch.setattr(internals, "ArrayDataAdapter", None)
    ran = []
    with pytest.warns(UserWarning) as record:
        for _ in range(2):
            with internals.releasing_custom_gradients():
                ran.append(True)
    assert ran == [True, True]
    _one_warning(record, "_gradient_registry")
    with pytest.warns(UserWarning) as record:
        for _ in range(2):
            with internals.keras_home_for_downloads("/elsewhere"):
                ran.append(True)
    _one_warning(record, "_KERAS_DIR")
    with pytest.warns(UserWarning) as record:
        batches = [
            sorted(b.numpy())
            for shuffle in (True, "batch")
            for b in internals.array_index_batches(5, 5, shuffle)
        ]
    assert batches == [[0, 1, 2, 3, 4]] * 2
    _one_warning(record, "ArrayDataAdapter")
    with pytest.warns(UserWarning) as record:
        internals.forget_call_nodes(object())
    assert len(record) == 2 and "_inbound_nodes" in str(record[0].message)


def test_forget_call_nodes_empties_the_real_lists():
    layer = keras.layers.Dense(1)
    layer(keras.Input((2,)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        internals.forget_call_nodes(layer)
    assert list(layer._inbound_nodes) == [] and list(layer._outbound_nodes) == []


def test_essential_internals_fail_naming_the_internal_and_versions(monkeypatch, tmp_path):
    for call, internal in (
        (lambda: internals.flatten_layers(object()), "Layer._flatten_layers"),
        (lambda: internals.created_trainable_variables(object()), "object._trainable_variables"),
        (lambda: internals.set_initial_epoch(object(), 1), "Model._initial_epoch"),
        (lambda: internals.record_built_variables(object(), []), "object._trainable_variables"),
    ):
        with pytest.raises(internals.MissingInternalError) as error:
            call()
        assert internal in str(error.value)
        assert internals.SUPPORTED_VERSIONS in str(error.value)
    monkeypatch.delattr(keras.callbacks.BackupAndRestore, "_save_model")
    with pytest.raises(internals.MissingInternalError, match="BackupAndRestore._save_model"):
        RunBackup(str(tmp_path / "backup"), {}, learning_rate=1e-3)


def test_print_msg_follows_keras_interactive_logging(capsys, monkeypatch):
    logged = []
    monkeypatch.setattr(internals.absl_logging, "info", logged.append)
    for interactive in (True, False):
        monkeypatch.setattr(
            keras.config,
            "is_interactive_logging_enabled",
            lambda interactive=interactive: interactive,
        )
        internals.print_msg(f"interactive={interactive}")
    assert capsys.readouterr().out == "interactive=True\n"
    assert logged == ["interactive=False"]


def test_the_scan_finds_private_reads_and_overridden_hooks(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import keras\n"
        "model._secret\n"
        "getattr(layer, '_hidden', None)\n"
        "self._own\n"
        "class Backup(keras.callbacks.BackupAndRestore):\n"
        "    _PREFIX = 'epoch_'\n"
        "    def _save_model(self):\n"
        "        self._mine = self._PREFIX\n"
        "        return self._current_epoch, self._mine\n"
    )
    assert sorted(name for _, name in _private_reads(probe)) == [
        "_current_epoch",
        "_hidden",
        "_save_model",
        "_secret",
    ]
