"""TransferHyperModel in KerasTuner's distributed mode: a chief and two workers.

Runs examples/distributed_search.py --local 2: three processes on
127.0.0.1 (one chief oracle serving gRPC, two workers), tiny trials.
"""

import importlib.util

from conftest import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "examples" / "distributed_search.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("distributed_search", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chief_and_two_workers_share_one_search(tmp_path):
    script = _load_script()
    args = script.parse_args(
        [
            "--local",
            "2",
            "--synthetic",
            "--weights",
            "none",
            "--backbone",
            "mobilenet_v1_025",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--max-trials",
            "2",
            "--threads",
            "1",
            "--timeout",
            "240",
            "--directory",
            str(tmp_path / "search"),
        ]
    )
    # Starts the processes, kills any still running when it returns or raises.
    reports = script.launch_local(args)

    chief = {t["trial_id"]: t for t in reports["chief"]["trials"]}
    ran = {w: reports[w]["trials_run"] for w in ("tuner0", "tuner1")}
    assert all(ran.values()), ran
    assert sorted(ran["tuner0"] + ran["tuner1"]) == sorted(chief)
    assert len(chief) == 2
    for trial in chief.values():
        assert trial["status"] == "COMPLETED"
        assert trial["score"] is not None
        assert "unfreeze_blocks" in trial["values"]
