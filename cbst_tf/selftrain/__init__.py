"""Self-training (sections 4.1-4.4): pure numpy algorithms, plus the I/O steps.

The pure API re-exported here has no I/O, no Keras and no TensorFlow: thresholds
(Algorithms 1/2, exact and streaming), pseudo-label solvers (Eqs. 5, 8, 9), the
self-paced policy and the spatial-prior math. The steps (``priors_step.run_priors``,
``label_step.run_label``, ``driver.run_selftrain``) are imported by module path.
"""

from cbst_tf.selftrain.histogram import BINS, ConfidenceHistogram, prior_scale, quantise
from cbst_tf.selftrain.policy import portion_for_round, rare_classes, source_portion_for_round
from cbst_tf.selftrain.priors import (
    PriorAccumulator,
    class_frequency_accumulate,
    gaussian_sigma,
    kernel_at_prior,
    resize_labels_nearest,
    resize_priors,
    smooth_and_normalise,
)
from cbst_tf.selftrain.pseudo_labels import assign_pseudo_labels
from cbst_tf.selftrain.thresholds import compute_thresholds, selected_count, thresholds_from_histogram

__all__ = [
    "BINS",
    "ConfidenceHistogram",
    "PriorAccumulator",
    "assign_pseudo_labels",
    "class_frequency_accumulate",
    "compute_thresholds",
    "gaussian_sigma",
    "kernel_at_prior",
    "portion_for_round",
    "prior_scale",
    "quantise",
    "rare_classes",
    "resize_labels_nearest",
    "resize_priors",
    "selected_count",
    "smooth_and_normalise",
    "source_portion_for_round",
    "thresholds_from_histogram",
]
