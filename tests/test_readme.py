"""Every code block of README.md and of the docs pages (docs/**/*.md) runs as written.

The documents are read README first, then the docs pages by path, and their
fenced blocks in order; ```` ```text ```` blocks are output samples and are
skipped. The others run in one child process (importing TensorFlow once costs
more than most blocks), all in one sandbox, from its working directory
`TMP/checkout`, laid out so that the documents' paths resolve as written:

    TMP/shared/assets/weights       -> the real ImageNet weights (KERAS_TRANSFER_ASSETS)
    TMP/shared/assets/data/flower_photos, and in TMP/checkout: photos/,
    path/to/photos/, flower_photos/, my_photos/, flowers_test/
                                    -> 4 real flower photos per class (symlinks)
    TMP/checkout/new_photos/        -> 3 of them, no class folders
    TMP/checkout/examples           -> the project's examples/
    KERAS_HOME=TMP/keras_home       -> empty: the README's own offline commands
                                       (under Install) seed it, from the assets

The machine is offline, so that seeding is the offline equivalent of every
download the documents mention. The README runs first because later pages
build on it: its Install commands seed `KERAS_HOME` and its API tour saves
`flowers.keras`, which the docs pages predict with. A docs page that shows a
README block includes it (`--8<-- "README.md:NAME"`, pymdownx.snippets)
instead of repeating it, so that block runs once, where it is written.
Nothing else is substituted but, in the default tier, the `SUBSTITUTIONS`
below (what would make CI slow; each must occur exactly once in all the
documents together, so the list cannot go stale unnoticed).

Python blocks run with `exec`, each in a fresh namespace, or in the previous
block's when an HTML comment `<!-- readme-test: continues -->` (invisible to
readers) stands just above the block; a line `EXPRESSION  # LITERAL` must
show the expression's value. Shell blocks run line by line
(backslash continuations joined, `NAME=value` prefixes taken as environment):

- `keras-transfer backbones|predict|evaluate ...`: run, in the child
  process, through `keras_transfer.cli.main`;
- `keras-transfer train|compare|export ...` (minutes, or 5-11 s of CPU for
  an export) and `python examples/NAME.py ...`: parsed by the command's own
  parser, and their folders checked; with `KERAS_TRANSFER_SLOW_TESTS=1`
  they also run for real (`python -m keras_transfer ...`), with
  `SLOW_SUBSTITUTIONS`;
- `pip install -e ".[extra]"`: the extras exist in setup.cfg;
- `bash SCRIPT` (`bash -n`), `lint-imports`, `mkdocs`, `python -m pytest`
  (the CI, the docs site and the suite themselves): their script, program
  or folder exists;
- anything else (`mkdir`, `ln`, `export`): run by bash in the sandbox, after
  which no symlink there may dangle.

`<!-- readme-test: parse-only -->` above a block keeps its commands or its
Python from running even in the slow tier (the distributed search needs
several machines; the `DataParallel` example, the JAX backend). The child
reports each block's result and time; one test per block
(`README.md:LINE`, `docs/PAGE.md:LINE`) asserts it.
"""

import ast
import configparser
import importlib.util
import inspect
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback

import pytest

from conftest import FLOWER_CLASSES
from conftest import assets_path
from conftest import copy_flower_subset

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
# README first (see the module docstring), then the docs pages by path.
DOCUMENTS = (PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").rglob("*.md")))
SLOW = os.environ.get("KERAS_TRANSFER_SLOW_TESTS") == "1"
PER_CLASS = 4

# (documents' text, what the default tier runs instead); the slow tier runs
# the documents as written. The tuner block's 4 depths x 8 epochs are 32 epochs of
# training (one depth, 4 epochs, still crosses the unfreeze epoch); an export
# costs 5-11 s of CPU, so the default tier checks that the call binds to
# export_model's signature (tests/test_export.py runs exports).
SUBSTITUTIONS = (
    ("unfreeze_blocks=(0, 2, 4, 8), unfreeze_epoch=3,", "unfreeze_blocks=(2,), unfreeze_epoch=3,"),
    (
        "tuner.search(train_ds, validation_data=val_ds, epochs=8)",
        "tuner.search(train_ds, validation_data=val_ds, epochs=4)",
    ),
    (
        'keras_transfer.export_model(model, "model.onnx", format="onnx")',
        'inspect.signature(keras_transfer.export_model).bind(model, "model.onnx", format="onnx")',
    ),
)
# Slow tier: the comparison's wall-clock budgets shrink (15 runs of 1.5
# minutes would be 20 minutes on their own).
SLOW_SUBSTITUTIONS = (("--budget-minutes", "0.2"),)

# keras-transfer commands the default tier runs (the others it parses).
RUN_COMMANDS = ("backbones", "predict", "evaluate")
HEADER = re.compile(r"^```(\S*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*readme-test:\s*([\w-]+).*-->\s*$")


def read_blocks(text):
    """`[(line, language, code, directives)]` of every fenced block, in order."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = HEADER.match(lines[i])
        if not match:
            i += 1
            continue
        directives, j = set(), i - 1
        while j >= 0 and (not lines[j].strip() or DIRECTIVE.match(lines[j])):
            if lines[j].strip():
                directives.add(DIRECTIVE.match(lines[j]).group(1))
            j -= 1
        end = lines.index("```", i + 1)
        blocks.append((i + 1, match.group(1), "\n".join(lines[i + 1 : end]), directives))
        i = end + 1
    return blocks


def document_name(path):
    return path.relative_to(PROJECT_ROOT).as_posix()


def substituted_documents(slow):
    """`{name: text}` of every document, with the default tier's substitutions."""
    texts = {document_name(path): path.read_text() for path in DOCUMENTS}
    for old, new in SUBSTITUTIONS:
        found = [name for name, text in texts.items() if old in text]
        count = sum(text.count(old) for text in texts.values())
        assert count == 1, f"substitution no longer matches once ({found}): {old!r}"
        if not slow:
            texts[found[0]] = texts[found[0]].replace(old, new)
    return texts


# `[(document, line, language, code, directives)]`, documents in run order.
BLOCKS = [
    (name, *block)
    for name, text in substituted_documents(slow=True).items()
    for block in read_blocks(text)
]


def test_every_block_is_labelled():
    unlabelled = [f"{name}:{line}" for name, line, language, _, _ in BLOCKS if not language]
    assert not unlabelled, (
        f"blocks {unlabelled} have no language: fence code as "
        "```bash / ```python and output samples as ```text"
    )


# --- the sandbox ----------------------------------------------------------


def make_sandbox(root):
    """Lays out `root` as the module docstring says; returns the working directory."""
    assets = assets_path()
    photos = copy_flower_subset(assets / "data" / "flower_photos", root / "photos", PER_CLASS)
    shared = root / "shared" / "assets"
    (shared / "data").mkdir(parents=True)
    (shared / "weights").symlink_to(assets / "weights")
    (shared / "data" / "flower_photos").symlink_to(photos)
    checkout = root / "checkout"
    checkout.mkdir()
    for name in ("photos", "path/to/photos", "flower_photos", "my_photos", "flowers_test"):
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).symlink_to(photos)
    new_photos = checkout / "new_photos"
    new_photos.mkdir()
    for name in FLOWER_CLASSES[:3]:
        first = sorted((photos / name).iterdir())[0]
        (new_photos / f"{name}_{first.name}").symlink_to(first.resolve())
    (checkout / "examples").symlink_to(PROJECT_ROOT / "examples")
    (root / "keras_home").mkdir()
    return checkout


# --- the child process: runs every block, writes results.json -------------


def shell_lines(code):
    """The block's commands: continuations joined, comment-only lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line for line in joined.splitlines() if shlex.split(line, comments=True)]


def split_command(line):
    """`(environment, argv)` of one shell command line."""
    words = shlex.split(line, comments=True)
    env = {}
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


def shown_values(code):
    """`(expression, value)` for each line `EXPRESSION  # LITERAL` of a block.

    A document shows results as comments (`spec.default_input_size  # 224`);
    a comment that is a Python literal without `...` must be the value.
    """
    for line in code.splitlines():
        expression, _, comment = line.partition("  #")
        try:
            ast.parse(expression.strip(), mode="eval")
            shown = ast.literal_eval(comment.strip())
        except (SyntaxError, ValueError):
            continue
        if "..." not in comment:
            yield expression.strip(), shown


def dangling_links(*folders):
    return [
        str(path)
        for folder in folders
        for path in pathlib.Path(folder).rglob("*")
        if path.is_symlink() and not path.exists()
    ]


class Runner:
    """Runs the documents' blocks in the sandbox (in the child process)."""

    def __init__(self, checkout, slow):
        self.checkout = pathlib.Path(checkout)
        self.slow = slow
        self.namespace = {}

    def python(self, document, line, code, directives):
        if "continues" not in directives:
            self.namespace = {"__name__": "__readme__", "inspect": inspect}
        # Leading newlines make traceback line numbers the document's line numbers.
        compiled = compile("\n" * line + code, str(PROJECT_ROOT / document), "exec")
        if "parse-only" in directives:
            return
        exec(compiled, self.namespace)
        for expression, shown in shown_values(code):
            value = eval(expression, self.namespace)
            assert value == shown, f"{document} shows {expression} as {shown!r}; it is {value!r}"

    def shell(self, document, line, code, directives):
        plain = []
        for command in shell_lines(code):
            env, argv = split_command(command)
            if argv[0] in ("keras-transfer", "python", "pip", "bash", "lint-imports", "mkdocs"):
                self.bash(plain)
                plain = []
                self.dispatch(env, argv, run="parse-only" not in directives)
            else:
                plain.append(command)
        self.bash(plain)

    def bash(self, commands):
        if not commands:
            return
        subprocess.run(["bash", "-euc", "\n".join(commands)], cwd=self.checkout, check=True)
        dangling = dangling_links(self.checkout, os.environ["KERAS_HOME"])
        assert not dangling, f"links that point nowhere: {dangling}"

    def dispatch(self, env, argv, run):
        program, args = argv[0], argv[1:]
        if program == "keras-transfer":
            self.keras_transfer(env, args, run)
        elif program == "python" and args[:2] == ["-m", "pytest"]:
            assert (PROJECT_ROOT / args[-1]).exists(), args
        elif program == "python":
            self.example(args[0], args[1:], run)
        elif program == "pip":
            self.pip(args)
        elif program == "bash":
            subprocess.run(["bash", "-n", str(PROJECT_ROOT / args[0])], check=True)
        else:
            assert shutil.which(program), f"{program} is not installed"

    def keras_transfer(self, env, args, run):
        from keras_transfer import cli

        if args[0] in RUN_COMMANDS and run:
            status = cli.main(args)
            assert not status, f"keras-transfer {shlex.join(args)} exited with {status}"
            return
        parsed = cli.build_parser().parse_args(args)
        if getattr(parsed, "data_dir", None):
            assert (self.checkout / parsed.data_dir).is_dir(), parsed.data_dir
        if run and self.slow:
            self.subprocess([sys.executable, "-m", "keras_transfer", *args], env)

    def example(self, script, args, run):
        path = self.checkout / script
        spec = importlib.util.spec_from_file_location(f"readme_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if inspect.signature(module.parse_args).parameters:
            parsed = module.parse_args(args)
        else:
            saved, sys.argv = sys.argv, [script, *args]
            try:
                parsed = module.parse_args()
            finally:
                sys.argv = saved
        if getattr(parsed, "data", None):
            assert (self.checkout / parsed.data).is_dir(), parsed.data
        if run and self.slow:
            self.subprocess([sys.executable, script, *args], {})

    def pip(self, args):
        config = configparser.ConfigParser()
        config.read(PROJECT_ROOT / "setup.cfg")
        extras = set(config["options.extras_require"])
        for word in args:
            named = re.findall(r"\[([\w,-]+)\]", word)
            for extra in ",".join(named).split(",") if named else ():
                assert extra in extras, f"pip extra [{extra}] is not in setup.cfg"

    def subprocess(self, argv, env):
        for option, value in SLOW_SUBSTITUTIONS:
            if option in argv:
                argv[argv.index(option) + 1] = value
        subprocess.run(argv, cwd=self.checkout, env={**os.environ, **env}, check=True, timeout=1800)


def run_documents(checkout, results_path, slow):
    """The child's entry point: runs every block, records each one's outcome."""
    runner, results = Runner(checkout, slow), {}
    for document, text in substituted_documents(slow).items():
        for line, language, code, directives in read_blocks(text):
            if language == "text":
                continue
            results[f"{document}:{line}"] = run_block(
                runner, document, line, language, code, directives
            )
    pathlib.Path(results_path).write_text(json.dumps(results, indent=1))


def run_block(runner, document, line, language, code, directives):
    start, cpu = time.perf_counter(), time.process_time()
    try:
        os.chdir(runner.checkout)
        run = runner.python if language == "python" else runner.shell
        run(document, line, code, directives)
        outcome = {"ok": True, "error": ""}
    except BaseException:  # SystemExit from argparse included
        outcome = {"ok": False, "error": traceback.format_exc()}
    outcome["seconds"] = round(time.perf_counter() - start, 1)
    outcome["cpu_seconds"] = round(time.process_time() - cpu, 1)
    print(
        f"{document}:{line} ({language}): {outcome['seconds']} s "
        f"({outcome['cpu_seconds']} s CPU), "
        f"{'ok' if outcome['ok'] else 'FAILED'}\n{outcome['error']}",
        file=sys.stderr,
        flush=True,
    )
    return outcome


# --- the tests --------------------------------------------------------------


@pytest.fixture(scope="module")
def block_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    checkout = make_sandbox(root)
    results_path = root / "results.json"
    env = {
        **os.environ,
        "KERAS_HOME": str(root / "keras_home"),
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "tests")]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    script = (
        "import test_readme; "
        f"test_readme.run_documents({str(checkout)!r}, {str(results_path)!r}, {SLOW})"
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=7200 if SLOW else 600,
    )
    if not results_path.exists():
        pytest.fail(f"the documents' runner died ({child.returncode}):\n{child.stderr[-6000:]}")
    return json.loads(results_path.read_text()), child.stdout + child.stderr


@pytest.mark.parametrize(
    "block", [f"{name}:{line}" for name, line, language, _, _ in BLOCKS if language != "text"]
)
def test_block_runs(block_results, block):
    results, output = block_results
    result = results[block]
    assert result["ok"], (
        f"block {block} failed:\n{result['error']}\n"
        f"--- end of the runner's output ---\n{output[-4000:]}"
    )
