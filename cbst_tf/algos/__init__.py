"""CBST's algorithms (sections 4.1-4.4) as pure functions: numpy (OpenCV for resampling), no I/O.

Nothing here imports TensorFlow or Keras or touches files (``tests/test_algos_pure.py``
checks it): thresholds (Algorithms 1/2, exact and streaming), pseudo-label solvers
(Eqs. 5, 8, 9), the self-paced policy, the spatial-prior maths, the pseudo-label
quality diagnostics, and CRST's soft pseudo-labels and target-subset score. They are the
reference that the label step (:mod:`cbst_tf.selftrain`) runs, partly as TensorFlow twins
next to the network.
"""

from cbst_tf.algos.crst import (
    REGULARIZERS,
    class_balanced_score,
    image_class_confidence,
    lrent_soft_labels,
    select_by_score,
)
from cbst_tf.algos.histogram import BINS, ConfidenceHistogram, prior_scale, quantise
from cbst_tf.algos.policy import portion_for_round, rare_classes, source_count
from cbst_tf.algos.priors import (
    PriorAccumulator,
    class_frequency_accumulate,
    class_posterior,
    gaussian_sigma,
    kernel_at_prior,
    resize_labels_nearest,
    resize_priors,
    smooth_and_normalise,
)
from cbst_tf.algos.pseudo_labels import assign_pseudo_labels
from cbst_tf.algos.quality import quality_counts, quality_summary
from cbst_tf.algos.thresholds import compute_thresholds, selected_count, thresholds_from_histogram

__all__ = [
    "BINS",
    "ConfidenceHistogram",
    "PriorAccumulator",
    "REGULARIZERS",
    "assign_pseudo_labels",
    "class_balanced_score",
    "class_frequency_accumulate",
    "class_posterior",
    "compute_thresholds",
    "gaussian_sigma",
    "image_class_confidence",
    "kernel_at_prior",
    "lrent_soft_labels",
    "portion_for_round",
    "prior_scale",
    "quality_counts",
    "quality_summary",
    "quantise",
    "rare_classes",
    "resize_labels_nearest",
    "resize_priors",
    "select_by_score",
    "selected_count",
    "smooth_and_normalise",
    "source_count",
    "thresholds_from_histogram",
]
