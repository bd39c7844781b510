"""``cbst-tf predict``: segment new images (a file, a folder or a TFRecord split) with trained weights."""
