"""Datasets as sharded TFRecords: schema, writer, manifest, tf.data reader, converters.

Every dataset (GTA5, SYNTHIA, Cityscapes, NTHU, BDD, a user's folder, pseudo-labels) is
stored in one TFRecord schema with labels in the 19 Cityscapes train-id positions, so the
trainer, labeller and evaluator read them all the same way (docs/ARCHITECTURE.md).
"""
