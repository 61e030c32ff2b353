"""The three ways a comparison trains each backbone, and their names in words.

- `scratch`: random weights, every layer trainable (BatchNormalization
  included);
- `head_only`: ImageNet weights, backbone frozen, only the head trains;
- `fine_tune`: ImageNet weights, the head first, then the top blocks of the
  backbone, unfrozen by `ProgressiveUnfreeze` inside the same `fit`.
"""

# In the order they run for each backbone: `head_only` before `fine_tune`,
# whose default schedule is sized on the head-only run under a budget.
METHODS = ("scratch", "head_only", "fine_tune")

# A run's label is "<backbone>, <method label>", in the report and the plot.
METHOD_LABELS = {
    "scratch": "from scratch",
    "head_only": "pretrained, head only",
    "fine_tune": "pretrained, head then fine-tune",
}

# How the conclusion says what a pretrained run did.
PRETRAINED_PHRASES = {
    "head_only": "pretrained with the head only",
    "fine_tune": "pretrained with the head, then fine-tuned",
}
