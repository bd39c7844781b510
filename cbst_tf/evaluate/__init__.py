"""Evaluation: confusion matrix and IoU, the paper's protocols, model evaluation and reports.

``run.run_evaluate`` (the ``evaluate`` command) and ``configured.evaluate_from_config`` (a configured
model on a split) are imported from their modules; the light, TF-free pieces are re-exported here.
Cross-validation, which trains, is orchestration: :mod:`cbst_tf.crossval`.
"""

from cbst_tf.evaluate.confusion import ConfusionMatrix, iou_from_confusion, mean_iou
from cbst_tf.evaluate.evaluator import evaluate_model, summarize
from cbst_tf.evaluate.protocols import PROTOCOLS, Protocol, get_protocol
from cbst_tf.evaluate.report import format_table, print_table

__all__ = ["PROTOCOLS", "ConfusionMatrix", "Protocol", "evaluate_model", "format_table", "get_protocol",
           "iou_from_confusion", "mean_iou", "print_table", "summarize"]
