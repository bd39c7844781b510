"""``python -m cbst_tf.cli``: the console script (the demo's second process runs it)."""

from cbst_tf.cli import main

main()
