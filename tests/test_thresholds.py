"""Algorithms 1/2 via the streaming histogram vs a brute-force sort reference."""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cbst_tf.algos import ConfidenceHistogram, compute_thresholds, quantise, thresholds_from_histogram
from cbst_tf.errors import CbstError
from cbst_tf.selftrain.histogram_file import load_histogram, save_histogram

C = 5


def random_maps(seed, n=4, shape=(9, 11), classes=C, levels=None):
    """Softmax-like maps; with ``levels`` the values come from a small set (many ties)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if levels is None:
            m = rng.dirichlet(np.full(classes, 0.4), size=shape)
        else:
            m = rng.integers(1, levels + 1, size=(*shape, classes)) / levels
        out.append(m.astype(np.float32))
    return out


def reference_values(maps, priors=None, subsample=1):
    """Slow and obvious: float32 argmax, float16 value, per-image per-class [::k], concatenate."""
    per_class = [[] for _ in range(maps[0].shape[-1])]
    for m in maps:
        v = m.astype(np.float32)
        if priors is not None:
            s = 2.0 ** -math.ceil(math.log2(float(priors.max())))
            v = v * (priors.astype(np.float32) * np.float32(s))
        v = v.reshape(-1, m.shape[-1])
        cls = v.argmax(axis=1)
        top = v[np.arange(len(v)), cls].astype(np.float16).astype(np.float64)
        for c in range(m.shape[-1]):
            per_class[c].append(top[cls == c][::subsample])
    return [np.concatenate(x) for x in per_class]


def reference_thresholds(maps, portion, mode, priors=None, rank="official", subsample=1):
    values = reference_values(maps, priors, subsample)
    scale = 1.0 if priors is None else 2.0 ** -math.ceil(math.log2(float(priors.max())))

    def at_rank(vals):
        vals = np.sort(vals)[::-1]
        m = math.floor(len(vals) * portion) if rank == "official" else round(len(vals) * portion)
        return np.inf if m == 0 else vals[m - 1] / scale

    if mode == "st":
        return np.full(len(values), at_rank(np.concatenate(values)))
    return np.array([at_rank(v) for v in values])


@pytest.mark.parametrize("mode", ["st", "cbst"])
@pytest.mark.parametrize("rank", ["official", "paper"])
@pytest.mark.parametrize("portion", [0.2, 0.35, 0.5, 1.0])
def test_matches_sort_reference(mode, rank, portion):
    maps = random_maps(1)
    got = compute_thresholds(iter(maps), portion, mode, rank=rank)
    np.testing.assert_array_equal(got, reference_thresholds(maps, portion, mode, rank=rank))


@pytest.mark.parametrize("mode", ["st", "cbst"])
def test_many_ties(mode):
    maps = random_maps(2, levels=4)  # values in {0.25, 0.5, 0.75, 1}
    for portion in (0.1, 0.3, 0.77):
        got = compute_thresholds(maps, portion, mode)
        want = reference_thresholds(maps, portion, mode)
        np.testing.assert_array_equal(got, want)
        assert set(np.unique(got)) <= {0.25, 0.5, 0.75, 1.0}


def test_rank_conventions_differ_as_documented():
    # One class, 10 distinct values 0.1..1.0: official m=floor(2.5)=2 -> 2nd largest (0.9),
    # paper m=round(2.5)=2 (half to even) -> 0.9; p=0.35: floor(3.5)=3 vs round(3.5)=4.
    vals = np.linspace(0.1, 1.0, 10, dtype=np.float32).reshape(1, 10, 1)
    q = lambda x: float(np.float16(x))  # noqa: E731
    assert compute_thresholds([vals], 0.25, "cbst")[0] == q(0.9)
    assert compute_thresholds([vals], 0.25, "cbst", rank="paper")[0] == q(0.9)
    assert compute_thresholds([vals], 0.35, "cbst")[0] == q(0.8)
    assert compute_thresholds([vals], 0.35, "cbst", rank="paper")[0] == q(0.7)


def test_empty_class_and_too_few_pixels_give_inf():
    maps = random_maps(3, classes=4)
    for m in maps:  # class 3 never wins the argmax
        m[..., 3] = 0.0
    t = compute_thresholds(maps, 0.5, "cbst")
    assert t[3] == np.inf and np.isfinite(t[:3]).all()
    # floor(p * N_c) = 0: a class predicted at 2 pixels with p = 0.2
    one = np.zeros((1, 12, 2), np.float32)
    one[0, :, 0] = 1.0
    one[0, :2] = [0.1, 0.9]
    t = compute_thresholds([one], 0.2, "cbst")
    assert t[1] == np.inf and t[0] == 1.0
    np.testing.assert_array_equal(t, reference_thresholds([one], 0.2, "cbst"))


@pytest.mark.parametrize("mode", ["st", "cbst"])
def test_priors_potential(mode):
    maps = random_maps(4)
    rng = np.random.default_rng(5)
    priors = rng.random((9, 11, C)).astype(np.float32)
    priors /= priors.sum(axis=(0, 1))  # q ~ 1/99: the potentials would be tiny unscaled
    got = compute_thresholds(maps, 0.3, mode, priors=priors)
    np.testing.assert_array_equal(got, reference_thresholds(maps, 0.3, mode, priors=priors))
    assert (got < 0.05).all()  # reported in the units of q * p, not of the scaled values


@pytest.mark.parametrize("mode", ["st", "cbst"])
def test_subsample_every_kth_per_class(mode):
    maps = random_maps(6, shape=(13, 17))
    got = compute_thresholds(maps, 0.4, mode, subsample=4)
    np.testing.assert_array_equal(got, reference_thresholds(maps, 0.4, mode, subsample=4))
    hist = ConfidenceHistogram(C)
    for m in maps:
        hist.update(m, subsample=4)
    full = [len(v) for v in reference_values(maps)]
    kept = [len(v) for v in reference_values(maps, subsample=4)]
    assert hist.predicted_pixels.tolist() == full and hist.counted_pixels.tolist() == kept


def test_shards_merge_equals_unsharded(tmp_path):
    maps = random_maps(7, n=8)
    whole = ConfidenceHistogram(C)
    shards = [ConfidenceHistogram(C) for _ in range(4)]
    for i, m in enumerate(maps):
        whole.update(m)
        shards[i % 4].update(m)
    for i, h in enumerate(shards):  # through files, as label_step does
        save_histogram(h, tmp_path / f"shard-{i}.npz")
    loaded = [load_histogram(tmp_path / f"shard-{i}.npz") for i in range(4)]
    merged = sum(loaded)
    assert merged.num_images == 8
    np.testing.assert_array_equal(merged.counts, whole.counts)
    for mode in ("st", "cbst"):
        np.testing.assert_array_equal(thresholds_from_histogram(merged, 0.3, mode),
                                      thresholds_from_histogram(whole, 0.3, mode))
    in_place = loaded[0].merge(loaded[1]).merge(loaded[2]).merge(loaded[3])
    np.testing.assert_array_equal(in_place.predicted_pixels, whole.predicted_pixels)


def test_merge_refuses_mixed_priors():
    maps = random_maps(8, n=2)
    priors = np.full((9, 11, C), 1 / 99, np.float32)
    a, b = ConfidenceHistogram(C), ConfidenceHistogram(C)
    a.update(maps[0], priors)
    b.update(maps[1])
    with pytest.raises(CbstError, match="prior scales differ"):
        a + b
    with pytest.raises(CbstError, match="with priors or none"):
        a.update(maps[1])


def test_corrupt_and_missing_npz(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(CbstError, match=r"bad\.npz: corrupt confidence histogram") as exc:
        load_histogram(bad)
    assert "\n" not in str(exc.value)
    with pytest.raises(CbstError, match="not found"):
        load_histogram(tmp_path / "nope.npz")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, counts=np.zeros((2, 3)))
    with pytest.raises(CbstError, match="corrupt"):
        load_histogram(wrong)


def test_bad_inputs_one_line_errors():
    good = random_maps(9, n=1)[0]
    with pytest.raises(CbstError, match="mode"):
        compute_thresholds([good], 0.2, "bogus")
    with pytest.raises(CbstError, match="portion"):
        compute_thresholds([good], 0.0, "st")
    with pytest.raises(CbstError, match="rank"):
        compute_thresholds([good], 0.2, "st", rank="median")
    with pytest.raises(CbstError, match="no probability maps"):
        compute_thresholds([], 0.2, "st")
    with pytest.raises(CbstError, match=r"\(H, W, C\)"):
        compute_thresholds([good[0]], 0.2, "st")
    nan = good.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(CbstError, match="NaN"):
        compute_thresholds([nan], 0.2, "st")
    neg = good.copy()
    neg[1, 1, 2] = -0.5
    with pytest.raises(CbstError, match="negative"):
        compute_thresholds([neg], 0.2, "cbst")
    with pytest.raises(CbstError, match="priors: shape"):
        compute_thresholds([good], 0.2, "st", priors=np.ones((2, 2, C)))


def test_quantise_is_float16_round_to_nearest():
    x = np.array([[[0.1, 0.30000001, 1.0, 0.0]]], np.float32)
    np.testing.assert_array_equal(quantise(x).view(np.float16), x.astype(np.float16))


_RSS_SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from cbst_tf.algos import compute_thresholds
    n = int(sys.argv[1])
    rng = np.random.default_rng(0)
    def maps():
        for _ in range(n):
            m = rng.random((64, 128, 19), dtype=np.float32)
            yield m / m.sum(axis=-1, keepdims=True)
    t = compute_thresholds(maps(), 0.3, "cbst")
    assert np.isfinite(t).all()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


@pytest.mark.slow
def test_memory_independent_of_number_of_images():
    def peak_kb(n):
        out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(n)], capture_output=True, text=True,
                             check=True)
        return int(out.stdout.strip().splitlines()[-1])

    small, large = peak_kb(200), peak_kb(2000)
    # 2,000 maps of 64x128x19 float32 would be 1.2 GB if kept; allow 50 MB of noise.
    assert large - small < 50 * 1024, (small, large)
