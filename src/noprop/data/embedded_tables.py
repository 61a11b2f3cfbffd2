"""Two small tables shipped with scikit-learn (no download): ``breast-cancer`` and ``wine``.

=================  =====  ========  =======  ==================================================
name               rows   features  classes  class names
=================  =====  ========  =======  ==================================================
``breast-cancer``  569    30        2        malignant, benign (Wisconsin diagnostic)
``wine``           178    13        3        class_0, class_1, class_2 (three cultivars)
=================  =====  ========  =======  ==================================================

Each is split 80/20 by the fixed seeded hold-out every table without a split gets
(:func:`noprop.data.base.hold_out`) and standardised per feature with the training rows'
statistics (:func:`noprop.data.tabular.assemble_table`); the column names are scikit-learn's.
"""

from __future__ import annotations

import numpy as np

from noprop.data.base import ClassificationData, hold_out
from noprop.data.tabular import assemble_table

EMBEDDED_TABLES: tuple[str, ...] = ("breast-cancer", "wine")


def load_embedded_table(name: str) -> ClassificationData:
    """``breast-cancer`` or ``wine`` from scikit-learn's bundled files."""
    from sklearn import datasets

    loader = {"breast-cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}[name]
    bunch = loader()
    x, y = np.asarray(bunch.data, dtype=np.float32), np.asarray(bunch.target, dtype=np.int64)
    x, y, xt, yt = hold_out(x, y, name)
    return assemble_table(name, x, y, xt, yt, tuple(str(n) for n in bunch.target_names),
                          tuple(str(n) for n in bunch.feature_names), name)
