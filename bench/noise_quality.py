"""Quality of `webjft noise` against truth it never reads, side by side with confident learning (cleanlab).

Data: synthetic Gaussian look-alike classes and sklearn's 8x8 digits, both with structured label flips and a
small verified sample (index.testdata). Per set and seed: per-class noise-rate MAE over classes with >= 50
labels, AUROC of the per-label noise score for wrong labels, interval coverage, wall time.

cleanlab gets out-of-sample predicted probabilities from 5-fold cross-validated logistic regression on the
same features webjft uses (whitened as `index.whiten` does, L2-normalised); its class noise rate is
1 - P(true = c | label = c) from the inverse noise matrix, its label score 1 - self-confidence. cleanlab is
AGPL: benchmark-only, never imported by webjft itself.

    .venv/bin/python bench/noise_quality.py --seeds 0 1 2 > /tmp/noise_quality.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from index.noise import NoiseConfig, estimate_noise  # noqa: E402
from index.signals import normalize_rows  # noqa: E402
from index.testdata import NoisySet, auroc, digits, evaluate, gaussian_classes  # noqa: E402
from index.whiten import apply_whitening, fit_whitening  # noqa: E402


def run_webjft(noisy: NoisySet, supervised: bool, whiten_dims: int = NoiseConfig.whiten_dims) -> dict:
    start = time.perf_counter()
    result = estimate_noise(noisy.embeddings, noisy.labels, noisy.verified if supervised else None,
                            NoiseConfig(backend="faiss-cpu", seed=noisy.seed, whiten_dims=whiten_dims))
    seconds = time.perf_counter() - start
    return {**evaluate(noisy, result.classes, result.images), "seconds": seconds}


def run_cleanlab(noisy: NoisySet, whiten_dims: int = NoiseConfig.whiten_dims) -> dict:
    from cleanlab.count import estimate_py_and_noise_matrices_from_probabilities
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    start = time.perf_counter()
    x = noisy.embeddings  # the features webjft sees: whitened unless --whiten-dims 0
    x = apply_whitening(x, fit_whitening(x, whiten_dims, shrink=NoiseConfig.whiten_shrink)) if whiten_dims else \
        normalize_rows(x)
    labels = noisy.labels.values.astype(np.int64)
    model = LogisticRegression(max_iter=2000, C=10.0)
    probs = cross_val_predict(model, x, labels, cv=5, method="predict_proba")
    _, _, inverse, _ = estimate_py_and_noise_matrices_from_probabilities(labels, probs)
    rate = 1 - np.diag(inverse)
    score = 1 - get_label_quality_scores(labels, probs)
    seconds = time.perf_counter() - start
    wrong = noisy.wrong
    counts = np.bincount(labels, minlength=noisy.labels.n_classes)
    true_rate = np.bincount(labels, wrong, noisy.labels.n_classes) / np.maximum(counts, 1)
    keep = counts >= 50
    return {"classes": int(keep.sum()), "mae": float(np.abs(rate - true_rate)[keep].mean()), "coverage": float("nan"),
            "auroc": auroc(score, wrong), "noise": float(wrong.mean()), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--whiten-dims", type=int, default=NoiseConfig.whiten_dims,
                        help="webjft's NoiseConfig.whiten_dims (0: no whitening)")
    parser.add_argument("--no-cleanlab", action="store_true")
    args = parser.parse_args()
    sets = {
        "gaussian 40 classes, 8k images, 600 verified": lambda seed: gaussian_classes(seed),
        "gaussian 200 classes, 30k images, 400 verified": lambda seed: gaussian_classes(
            seed, n_classes=200, n_images=30_000, n_verified=400),
        "digits 8x8 (1,797 images), 200 verified": lambda seed: digits(seed),
    }
    print("| data | seed | true noise | method | classes >= 50 | MAE | AUROC | coverage | time |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    summary: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for name, make in sets.items():
        for seed in args.seeds:
            noisy = make(seed)
            methods = [("webjft calibrated", lambda n: run_webjft(n, True, args.whiten_dims)),
                       ("webjft unsupervised", lambda n: run_webjft(n, False, args.whiten_dims))]
            if not args.no_cleanlab:
                methods.append(("cleanlab (CV logistic)", lambda n: run_cleanlab(n, args.whiten_dims)))
            for method, run in methods:
                got = run(noisy)
                summary.setdefault((name, method), []).append((got["mae"], got["auroc"]))
                coverage = "–" if np.isnan(got["coverage"]) else f"{got['coverage']:.2f}"
                print(f"| {name} | {seed} | {got['noise']:.3f} | {method} | {got['classes']} | {got['mae']:.4f} | "
                      f"{got['auroc']:.4f} | {coverage} | {got['seconds']:.1f} s |", flush=True)
    print()
    print("| data | method | mean MAE | worst MAE | mean AUROC | worst AUROC |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for (name, method), values in summary.items():
        mae, auc = np.array(values).T
        print(f"| {name} | {method} | {mae.mean():.4f} | {mae.max():.4f} | {auc.mean():.4f} | {auc.min():.4f} |")


if __name__ == "__main__":
    main()
