"""Evaluation: confusion matrix and IoU, the paper's protocols, model evaluation and reports."""
