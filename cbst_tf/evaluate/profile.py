"""A model's per-class profile on labelled data: what it predicts, how right and how sure.

Self-training works when a class is *under-confident but right* on the target (section
4.2): its pixels predicted as the class are mostly correct, and confidence ranks the
right ones first. This profile measures exactly that, per class, for the source model
on the target (``bench/source_profile.py``; ``../shared/notes/source-model-profile.md``):

* ``predicted_share`` / ``true_share``: % of labelled pixels predicted as / labelled c;
* ``precision`` / ``recall`` of the arg-max prediction;
* ``confidence``: mean max-probability over the pixels predicted as c;
* ``p_true``: mean probability given to c over the pixels labelled c;
* ``precision_top``: precision among the most confident ``top`` share of the pixels
  predicted as c (the share CBST's first round selects, Algorithm 2 with p = 20%),
  estimated from a confidence histogram with 100 bins.

Pure numpy; accumulate image by image, merge by addition.
"""

from __future__ import annotations

import numpy as np

_BINS = 100


class ClassProfile:
    """Streaming per-class statistics of ``(probabilities (H, W, C), labels (H, W))`` pairs."""

    def __init__(self, num_classes: int):
        self.c = num_classes
        self.true = np.zeros(num_classes, np.int64)
        self.predicted = np.zeros(num_classes, np.int64)
        self.correct = np.zeros(num_classes, np.int64)
        self.conf_sum = np.zeros(num_classes)
        self.p_true_sum = np.zeros(num_classes)
        # [class, confidence bin, right?] counts, to rank pixels by confidence per class.
        self.hist = np.zeros((num_classes, _BINS, 2), np.int64)

    def update(self, probs: np.ndarray, labels: np.ndarray) -> None:
        c = self.c
        probs = np.asarray(probs, np.float64).reshape(-1, c)
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if probs.shape[0] != labels.shape[0]:
            raise ValueError(f"ClassProfile: {probs.shape[0]} probability rows for {labels.shape[0]} labels")
        keep = labels < c
        probs, labels = probs[keep], labels[keep]
        pred = probs.argmax(1)
        conf = probs[np.arange(len(pred)), pred]
        right = pred == labels
        self.true += np.bincount(labels, minlength=c)
        self.predicted += np.bincount(pred, minlength=c)
        self.correct += np.bincount(pred[right], minlength=c)
        self.conf_sum += np.bincount(pred, weights=conf, minlength=c)
        self.p_true_sum += np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=c)
        b = np.minimum((conf * _BINS).astype(np.int64), _BINS - 1)
        np.add.at(self.hist, (pred, b, right.astype(np.int64)), 1)

    def merge(self, other: ClassProfile) -> ClassProfile:
        out = ClassProfile(self.c)
        for k in ("true", "predicted", "correct", "conf_sum", "p_true_sum", "hist"):
            setattr(out, k, getattr(self, k) + getattr(other, k))
        return out

    def _precision_top(self, top: float) -> list[float | None]:
        out: list[float | None] = []
        for c in range(self.c):
            h = self.hist[c][::-1]  # most confident bins first
            n = h.sum(1)
            want = top * n.sum()
            if want < 1:
                out.append(None)
                continue
            # Whole bins until the quota, then a proportional part of the bin that crosses it.
            cum = np.cumsum(n)
            k = int(np.searchsorted(cum, want))
            taken = h[:k].sum(0).astype(float)
            rest = want - (cum[k - 1] if k else 0)
            if n[k]:
                taken += h[k] * rest / n[k]
            out.append(float(taken[1] / taken.sum()))
        return out

    def result(self, top: float = 0.2) -> dict:
        """Per-class lists (``None`` where undefined) in percent, probabilities in 0..1.

        ``precision_top`` ranks by 1/100-wide confidence bins (the crossing bin taken in
        proportion) and over labelled pixels only, so it approximates what Algorithm 2 ranks.
        """
        if not 0.0 < top <= 1.0:
            raise ValueError(f"ClassProfile.result: top must be in (0, 1], got {top}")
        total = max(1, int(self.true.sum()))

        def ratio(a, b, scale=1.0):
            return [None if d == 0 else float(scale * n / d) for n, d in zip(a, b, strict=True)]

        return {
            "pixels": total,
            "predicted_share": ratio(100 * self.predicted, np.full(self.c, total)),
            "true_share": ratio(100 * self.true, np.full(self.c, total)),
            "precision": ratio(self.correct, self.predicted, 100),
            "recall": ratio(self.correct, self.true, 100),
            "confidence": ratio(self.conf_sum, self.predicted),
            "p_true": ratio(self.p_true_sum, self.true),
            f"precision_top{int(round(100 * top))}": [None if v is None else 100 * v
                                                     for v in self._precision_top(top)],
        }
