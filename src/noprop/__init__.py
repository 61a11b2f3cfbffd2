"""noprop: training neural networks without back-propagation across blocks (NoProp, arXiv 2503.24322).

Quick start::

    from noprop import Classifier
    clf = Classifier(method="dt", epochs=5).fit(x_train, y_train)
    clf.predict(x_test)

The building blocks live in sub-modules: :mod:`noprop.schedules`, :mod:`noprop.embeddings`,
:mod:`noprop.blocks`, :mod:`noprop.methods`, :mod:`noprop.data`, :mod:`noprop.training`.
"""

from noprop._version import __version__
from noprop.api import Classifier
from noprop.config import RunConfig
from noprop.spec import DataSpec

__all__ = ["Classifier", "DataSpec", "RunConfig", "__version__"]
