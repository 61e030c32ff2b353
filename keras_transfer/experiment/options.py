"""The comparison's defaults and output file names, importable without TensorFlow.

The `compare` command line reads them to build its options before anything
heavy is imported; `run_comparison` and the report read the same values.
"""

# Defaults of `run_comparison` that the `compare` command line shares.
DEFAULT_OUTPUT_DIR = "compare"
DEFAULT_EPOCHS = 10
DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_TARGET_ACCURACY = 0.8

# The files a comparison writes in its output folder.
REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"
PLOT_FILE = "accuracy_vs_time.png"
# Every progress line (warm-up, each run's epochs and phase changes).
LOG_FILE = "compare.log"
