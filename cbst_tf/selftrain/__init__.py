"""The self-training steps (section 4.1): what runs the pure algorithms of :mod:`cbst_tf.algos`.

``priors_step.run_priors`` (spatial priors from the source labels), ``label_step.run_label``
(step a: pseudo-labels, with the TensorFlow kernels of ``device_ops``, the logit cache of
``logit_cache`` and the TFRecord writer of ``pseudo_dataset``) and ``driver.run_selftrain``
(every step of an experiment, resumable). Import them by module path.
"""
