"""Auditing a labelled image folder: likely label errors, duplicates, outliers.

```python
audit = keras_transfer.audit.audit_folder("flower_photos")
audit.label_issues[:3]   # [LabelIssue(path=..., given='roses', suggested='tulips', score=0.01), ...]
audit.write("audit")     # label_issues.csv, duplicates.csv, outliers.csv, audit.html
```

`keras-transfer audit DATA_DIR --output-dir OUT` does the same from the
command line. Needs cleanlab and scikit-learn: `pip install keras-transfer[audit]`.

- `features`: the pooled pretrained-backbone features, one pass over the images.
- `label_issues`: confident learning (cleanlab) on out-of-fold probabilities.
- `duplicates`: exact (file hash) and near (feature similarity) duplicates,
  and those across the train/validation split.
- `outliers`: images unlike the others (cleanlab's `OutOfDistribution`).
- `page`: the self-contained `audit.html`.
- `folder_audit`: `audit_folder` and its result, `Audit`.
"""

from keras_transfer.audit.duplicates import Duplicate
from keras_transfer.audit.folder_audit import Audit
from keras_transfer.audit.folder_audit import audit_folder
from keras_transfer.audit.label_issues import LabelIssue
from keras_transfer.audit.outliers import Outlier

__all__ = ["Audit", "Duplicate", "LabelIssue", "Outlier", "audit_folder"]
