"""cbst-tf: class-balanced self-training (Zou et al., ECCV 2018) for TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
