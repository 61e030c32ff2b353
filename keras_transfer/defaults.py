"""The library's defaults, in one place.

Every module, the command line and the examples read these, so that a
default changes in one line and the documentation of each stays true.
"""

# The backbone a user gets without choosing: small, fast on CPU, and its
# ImageNet weights are the ones the project's own tests load.
BACKBONE = "mobilenet_v2_050"

# Seed of the train/validation split and of the initialisation.
SEED = 1337

# Fraction of the images held out for validation.
VALIDATION_SPLIT = 0.2

# Backbone learning rate relative to the head's, when units unfreeze.
LR_RATIO = 0.1

# Dropout rate of `ClassifierHead`.
HEAD_DROPOUT = 0.2

# Bytes of cached frozen features kept in memory before spilling to disk.
CACHE_MEMORY_LIMIT = 2 * 2**30

# Batch size of the data loader and the command line.
BATCH_SIZE = 32
