"""A `TransferHyperModel` search spread over processes or machines.

KerasTuner's own distributed mode is the engine: one *chief* process holds
the oracle (which trials to run, and all their results) and serves it over
gRPC; any number of *workers* ask it for trials, train them, and report
back. Every process runs this same script; three environment variables say
which role it plays:

    KERASTUNER_TUNER_ID     "chief" for the oracle, any other unique id
                            ("tuner0", "tuner1", ...) for a worker
    KERASTUNER_ORACLE_IP    address the chief listens on / workers dial
    KERASTUNER_ORACLE_PORT  its port

On several machines (a shared `--directory` that every machine can read and
write, e.g. an NFS mount or a `gs://` bucket, since Hyperband resumes trials
from checkpoints another worker wrote):

    # machine A (chief), reachable as 10.0.0.1:8000
    KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=0.0.0.0 \
        KERASTUNER_ORACLE_PORT=8000 \
        python examples/distributed_search.py --data flower_photos \
        --directory /shared/tuning
    # machines B, C, ... (one worker per GPU)
    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=10.0.0.1 \
        KERASTUNER_ORACLE_PORT=8000 \
        python examples/distributed_search.py --data flower_photos \
        --directory /shared/tuning

On one machine, `--local N` starts a chief and N workers on 127.0.0.1 and
checks that every worker ran trials and that the chief holds all results:

    python examples/distributed_search.py --local 2 --synthetic --weights none
"""

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

ROLE_VARIABLES = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="image folder, one subfolder per class")
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="use 24 generated images in 2 classes instead of --data",
    )
    parser.add_argument("--directory", default="distributed_search")
    parser.add_argument("--project-name", default="transfer")
    parser.add_argument("--backbone", default="mobilenet_v2_035")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="'imagenet', 'none' or the path to a weights file",
    )
    parser.add_argument("--max-trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TensorFlow threads per process (0: TensorFlow's default)",
    )
    parser.add_argument(
        "--local",
        type=int,
        metavar="N",
        default=0,
        help="start a chief and N workers on 127.0.0.1 and check the results",
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    # Internal: set by --local for the processes it starts.
    parser.add_argument("--barrier", help=argparse.SUPPRESS)
    parser.add_argument("--num-workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ------------------------------------------------------------------ roles


def make_tuner(args):
    import keras_tuner

    import keras_transfer

    weights = None if args.weights.lower() == "none" else args.weights
    size = args.image_size
    hypermodel = keras_transfer.TransferHyperModel(
        num_classes=_num_classes(args),
        backbones=(args.backbone,),
        input_shape=(size, size, 3),
        weights=weights,
        unfreeze_blocks=(0, 1, 2),
        # Fine-tune from the second epoch, or from the start in 1-epoch runs.
        unfreeze_epoch=min(1, args.epochs - 1),
        head_units=(0, 16),
        head_dropout=0.2,
        head_learning_rate=1e-3,
        backbone_lr_ratio=0.1,
    )

    class RecordingSearch(keras_tuner.RandomSearch):
        """Remembers the trials this process ran (to show who did what)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.trials_run = []

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            self.trials_run.append(trial.trial_id)

    return RecordingSearch(
        hypermodel,
        objective="val_accuracy",
        max_trials=args.max_trials,
        seed=1,
        directory=args.directory,
        project_name=args.project_name,
    )


def load_data(args):
    import numpy as np

    import keras_transfer

    size = args.image_size
    if args.synthetic:
        # Two classes of noisy images with different mean colours.
        rng = np.random.default_rng(0)
        y = np.arange(24) % 2
        x = rng.normal(80 + 100 * y[:, None, None, None], 30, (24, size, size, 3))
        x = np.clip(x, 0, 255).astype("float32")
        return (x[:16], y[:16]), (x[16:], y[16:])
    train_ds, val_ds, _ = keras_transfer.load_image_folder(
        args.data, image_size=size, batch_size=args.batch_size
    )
    return (train_ds,), val_ds


def _num_classes(args):
    if args.synthetic:
        return 2
    from keras_transfer.data import scan_image_folder

    return len(scan_image_folder(args.data).class_names)


def run_role(args):
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    tuner = make_tuner(args)
    if tuner_id == "chief":
        # The chief serves the oracle and trains nothing: search() returns
        # once every trial has ended, and the chief holds all the results.
        tuner.search()
        from keras_transfer.tuner import results_table

        report = {"tuner_id": tuner_id, "trials": _trial_records(tuner)}
        print(results_table(tuner))
    else:
        train, val = load_data(args)
        if args.barrier:
            _wait_for_peers(args.barrier, tuner_id, args.num_workers, args.timeout)
        fit_kwargs = {"epochs": args.epochs, "verbose": 0}
        if isinstance(val, tuple):
            fit_kwargs["batch_size"] = args.batch_size
        tuner.search(*train, validation_data=val, **fit_kwargs)
        report = {"tuner_id": tuner_id, "trials_run": list(tuner.trials_run)}
    if args.report:
        pathlib.Path(args.report).write_text(json.dumps(report, indent=2))


def _trial_records(tuner):
    records = []
    for trial in tuner.oracle.trials.values():
        records.append(
            {
                "trial_id": trial.trial_id,
                "status": trial.status,
                "score": trial.score,
                "values": trial.hyperparameters.values,
            }
        )
    return records


def _wait_for_peers(folder, tuner_id, count, timeout):
    # So that a fast-starting worker cannot take every trial before the
    # others have connected.
    folder = pathlib.Path(folder)
    (folder / tuner_id).touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.iterdir())) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{tuner_id}: the other workers did not start")
        time.sleep(0.2)


# ------------------------------------------------------------ local launch


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_local(args):
    """Runs a chief and `args.local` workers here; returns their reports.

    Raises:
        RuntimeError: a process failed or timed out, a worker ran no trial,
            or the chief's trials are not exactly the workers' trials.
    """
    num_workers = args.local
    root = pathlib.Path(args.directory)
    root.mkdir(parents=True, exist_ok=True)
    barrier = root / "barrier"
    barrier.mkdir(exist_ok=True)
    port = free_port()
    script = os.path.abspath(__file__)
    passed = _passed_options(args)
    ids = ["chief"] + [f"tuner{i}" for i in range(num_workers)]
    processes, logs = {}, {}
    try:
        for tuner_id in ids:
            env = dict(os.environ)
            env.update(
                KERASTUNER_TUNER_ID=tuner_id,
                KERASTUNER_ORACLE_IP="127.0.0.1",
                KERASTUNER_ORACLE_PORT=str(port),
                TF_CPP_MIN_LOG_LEVEL="2",
            )
            logs[tuner_id] = open(root / f"{tuner_id}.log", "w")
            command = [
                sys.executable,
                script,
                *passed,
                "--barrier",
                str(barrier),
                "--num-workers",
                str(num_workers),
                "--report",
                str(root / f"{tuner_id}.json"),
            ]
            processes[tuner_id] = subprocess.Popen(
                command, env=env, stdout=logs[tuner_id], stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + args.timeout
        for tuner_id in reversed(ids):  # Workers first; the chief ends last.
            remaining = max(1.0, deadline - time.monotonic())
            try:
                code = processes[tuner_id].wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"{tuner_id} did not finish in {args.timeout:.0f} s."
                    + _log_tail(root, tuner_id)
                ) from None
            if code != 0:
                raise RuntimeError(
                    f"{tuner_id} exited with status {code}." + _log_tail(root, tuner_id)
                )
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs.values():
            log.close()
    reports = {i: json.loads((root / f"{i}.json").read_text()) for i in ids}
    _check(reports, ids[1:])
    return reports


def _passed_options(args):
    options = [
        "--directory",
        args.directory,
        "--project-name",
        args.project_name,
        "--backbone",
        args.backbone,
        "--image-size",
        str(args.image_size),
        "--weights",
        args.weights,
        "--max-trials",
        str(args.max_trials),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
        "--timeout",
        str(args.timeout),
    ]
    if args.synthetic:
        options.append("--synthetic")
    if args.data:
        options += ["--data", args.data]
    return options


def _check(reports, workers):
    chief = {t["trial_id"]: t for t in reports["chief"]["trials"]}
    ran = {w: reports[w]["trials_run"] for w in workers}
    idle = [w for w, trials in ran.items() if not trials]
    if idle:
        raise RuntimeError(f"Workers that ran no trial: {idle}. Trials run: {ran}")
    everything = [t for trials in ran.values() for t in trials]
    if sorted(everything) != sorted(chief):
        raise RuntimeError(f"The chief holds trials {sorted(chief)}, the workers ran {ran}.")
    unfinished = [t for t, record in chief.items() if record["status"] != "COMPLETED"]
    if unfinished:
        raise RuntimeError(f"Trials not completed on the chief: {unfinished}")


def _log_tail(root, tuner_id, lines=30):
    path = pathlib.Path(root) / f"{tuner_id}.log"
    if not path.exists():
        return ""
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {path} ---\n" + "\n".join(tail)


def main(argv=None):
    args = parse_args(argv)
    if not args.synthetic and not args.data:
        sys.exit("Pass --data DIR (an image folder) or --synthetic.")
    if args.local:
        start = time.monotonic()
        reports = launch_local(args)
        for worker, report in sorted(reports.items()):
            if worker != "chief":
                print(f"{worker} ran trials {report['trials_run']}")
        print(
            f"chief holds {len(reports['chief']['trials'])} completed trials; "
            f"{time.monotonic() - start:.0f} s in all"
        )
        return
    missing = [v for v in ROLE_VARIABLES if v not in os.environ]
    if missing:
        sys.exit(
            f"Set {', '.join(missing)} (see the top of this file), or pass "
            "--local N to run a chief and N workers on this machine."
        )
    run_role(args)


if __name__ == "__main__":
    main()
