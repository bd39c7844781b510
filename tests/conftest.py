"""Shared test setup: quiet TensorFlow logs and keep thread pools small on 2-core CI.

``make test`` runs the suite in two pytest-xdist worker processes, one test file at a time
per worker (``-n 2 --dist loadfile``, see the Makefile). Each worker then gets ONE
TensorFlow thread, so the two workers fill the 2 cores without oversubscribing them; a plain
``pytest`` run (one process) keeps 2 threads. An explicit TF_NUM_*_THREADS in the
environment wins either way. The thread count can change the last bits of floating-point
results; subprocesses started by the tests inherit this environment, so runs that are
compared bit for bit use the same setting.
"""

import os

import pytest

_XDIST_WORKER = "PYTEST_XDIST_WORKER" in os.environ
_THREADS = "1" if _XDIST_WORKER else "2"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", _THREADS)
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", _THREADS)

# The longest test files (minutes each, the benchmark gap first). Under xdist they are
# collected first, so a worker starts each of them at once while the other worker works
# through the remaining files beside them; otherwise the scheduler could hand out the
# end-to-end benchmark last and leave one core idle for its whole run. (xdist also queues
# the third file behind the first one: test_algos_pure, a few seconds.)
LONGEST_FIRST = ("test_benchmark_gap.py", "test_demo.py")


def pytest_collection_modifyitems(config, items):
    if not _XDIST_WORKER:
        return
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keeps its order


@pytest.fixture
def no_demo_work(monkeypatch):
    """``cbst-tf demo`` with every stage that writes replaced by a failure: a test of a refusal
    (a folder of the user's, ``/``, a bad seed) must see it before any of them, and a regression
    must not render into the user's folder or into ``/``."""
    from cbst_tf import demo

    def forbidden(*args, **kwargs):
        raise AssertionError("the demo started writing where it should have refused")

    for name in ("_run", "prepare_data", "save_resolved"):
        monkeypatch.setattr(demo, name, forbidden)
