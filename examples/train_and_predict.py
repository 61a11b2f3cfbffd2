"""Train NoProp-DT from Python, score it, save it, load it back and predict.

    python examples/train_and_predict.py            # about a minute on 2 CPU cores
    python examples/train_and_predict.py --tiny     # a few seconds: checks that it runs

The data is scikit-learn's 8x8 digits (1,797 images, shipped with scikit-learn), so nothing is
downloaded. Any option of ``noprop train`` is a keyword argument of ``Classifier``.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from noprop import Classifier


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny budget (seconds), to check that it runs")
    args = parser.parse_args()

    digits = load_digits()
    x = (digits.images[:, None] * 255 / 16).astype(np.uint8)      # (N, 1, 8, 8) uint8 pixels
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.2, random_state=0)

    budget = {"epochs": 1, "num_blocks": 2} if args.tiny else {"epochs": 10}
    clf = Classifier(method="dt", embedding="onehot", seed=0, **budget)
    clf.fit(x_train, y_train, validation=(x_test, y_test))
    print(f"test accuracy: {clf.score(x_test, y_test):.4f}")

    with tempfile.TemporaryDirectory() as tmp:
        clf.save(Path(tmp) / "digits-dt")                             # a run directory the CLI reads too
        again = Classifier.load(Path(tmp) / "digits-dt")
        print("first five predictions:", again.predict(x_test[:5]), "labels:", y_test[:5])
        print("their probabilities:", np.round(again.predict_proba(x_test[:5]).max(axis=1), 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
