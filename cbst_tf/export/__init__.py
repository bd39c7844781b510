"""``cbst-tf export``: a SavedModel for TensorFlow Serving (or a TFLite model) that needs only TensorFlow."""
