"""The schema of the one typed configuration tree: every key, its type, default and range.

The dataclasses are the single source of truth; :mod:`cbst_tf.config.loading` fills them from
YAML and ``--set``, :mod:`cbst_tf.config.reference` documents them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


def _rng(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    """Field metadata: the closed (or left-open) range a number must lie in."""
    return {"range": (lo, hi, lo_open)}


def _items(hi: float, length: int = 2):
    """Field metadata of a list: at most ``length`` items, each at most ``hi`` (sizes and scales
    are bounded so that no setting can allocate without limit; lower bounds are checked by
    :func:`validate`)."""
    return {"items": (hi, length)}


#: Seeds reach numpy and Keras, which take 32-bit unsigned integers.
MAX_SEED = 2**32 - 1
#: Upper bound of counts that only cost time (steps, images), not memory at once.
MAX_COUNT = 10**9


@dataclass
class DataConfig:
    """Where the converted TFRecord datasets live and how they are read."""

    source: str = ""  # labelled source-domain TFRecord directory (has manifest.json)
    target: str = ""  # unlabelled target-domain TFRecord directory (pseudo-labelled)
    target_eval: str = ""  # labelled target-domain TFRecord directory for evaluation
    num_classes: int = field(default=19, metadata=_rng(2, 254))
    crop_size: list[int] = field(default_factory=lambda: [500, 500], metadata=_items(4096))
    scale_range: list[float] = field(default_factory=lambda: [0.7, 1.3], metadata=_items(8.0))
    flip: bool = True
    # RGB means: padding value of random crops (the network subtracts them, so padding is 0).
    image_mean: list[float] = field(default_factory=lambda: [123.68, 116.78, 103.94], metadata=_items(255.0, 3))
    # Resize factor applied to every image before the network in label/evaluate; labels
    # stay at full resolution and logits are resized back to them.
    input_scale: float = field(default=1.0, metadata=_rng(0.05, 4.0))
    shuffle_buffer: int = field(default=256, metadata=_rng(1, 100_000))
    parallel_calls: int = field(default=4, metadata=_rng(1, 256))
    cycle_length: int = field(default=4, metadata=_rng(1, 256))
    prefetch: int = field(default=2, metadata=_rng(0, 64))
    # Leave out (and count, in one warning) records whose image or label cannot be decoded,
    # instead of stopping with an error that names the first one. Finding them decodes every
    # image of each dataset once per process.
    skip_bad: bool = False


@dataclass
class ModelConfig:
    """Which network, how wide, and how it is initialised."""

    name: Literal["fcn8s_vgg16", "resnet38"] = "fcn8s_vgg16"
    width: float = field(default=1.0, metadata=_rng(0.01, 4.0))
    # None | "imagenet" (Keras cache) | path to a local Keras weights .h5 file.
    weights: str | None = None
    dropout: float = field(default=0.5, metadata=_rng(0.0, 0.99))
    freeze_bn: bool = False  # ResNet-38: keep BatchNorm statistics fixed (official code)
    # ResNet-38 BatchNorm epsilon (official CBST symbols: 1.001e-5).
    bn_epsilon: float = field(default=1e-5, metadata=_rng(0.0, 1.0, lo_open=True))


@dataclass
class TrainConfig:
    """Optimisation of ``pretrain`` and ``finetune`` (paper appendix A, official code)."""

    global_batch_size: int = field(default=2, metadata=_rng(1, 1024))
    steps: int = field(default=1000, metadata=_rng(1, MAX_COUNT))  # pretrain steps
    lr: float = field(default=1e-4, metadata=_rng(0.0, 10.0, lo_open=True))
    momentum: float = field(default=0.9, metadata=_rng(0.0, 0.999))
    weight_decay: float = field(default=5e-4, metadata=_rng(0.0, 1.0))
    schedule: Literal["fixed", "poly", "round_decay"] = "poly"
    poly_power: float = field(default=0.9, metadata=_rng(0.0, 10.0))
    classifier_lr_mult: float = field(default=1.0, metadata=_rng(0.0, 100.0))
    checkpoint_every: int = field(default=500, metadata=_rng(1, MAX_COUNT))
    keep_checkpoints: int = field(default=3, metadata=_rng(1, 1000))
    log_every: int = field(default=20, metadata=_rng(1, MAX_COUNT))


@dataclass
class SelfTrainConfig:
    """Pseudo-label rounds: Algorithms 1/2, Eqs. 5/8/9 and the self-paced policy."""

    method: Literal["source_only", "st", "st_sp", "cbst", "cbst_sp"] = "cbst_sp"
    # CRST (Zou et al., ICCV 2019; docs/CRST.md) on top of cbst / cbst_sp; none = CBST as is.
    # mrkld | mrent | mrl2: finetuning adds mr_weight * r(p) on pseudo-labelled target pixels;
    # lrent: soft pseudo-labels y ~ (p / exp(-k_c))^(1 / lr_weight), kept where Z > 1.
    regularizer: Literal["none", "mrkld", "mrent", "mrl2", "lrent"] = "none"
    # alpha of the MR loss, applied once (official --mr-weight-kld 0.1; the official code applies
    # it twice, an effective 0.01: docs/CRST.md).
    mr_weight: float = field(default=0.1, metadata=_rng(0.0, 100.0))
    # alpha of LRENT (official --lr-weight-ent 0.25); 0 is the limit alpha -> 0, i.e. CBST.
    lr_weight: float = field(default=0.25, metadata=_rng(0.0, 100.0))
    # Opt-in: self-train on this share of the target images, those with the highest class-balanced
    # confidence score of the source model (official CRST/CBST target: 505 of Cityscapes' 2,975
    # train images, 0.16975); null = every target image.
    target_subset: float | None = field(default=None, metadata=_rng(0.0, 1.0, lo_open=True))
    # Source model that round 1 starts from; default <workdir>/pretrain/final.weights.h5.
    source_weights: str | None = None
    # Spatial priors (.npy from `cbst-tf priors`); default <workdir>/priors/priors.npy.
    priors: str | None = None
    rounds: int = field(default=3, metadata=_rng(0, 100))
    # Self-paced portion p_R = min(p0 + (R-1) * dp, p_max) (section 4.3, appendix A).
    portion_start: float = field(default=0.2, metadata=_rng(0.0, 1.0, lo_open=True))
    portion_step: float = field(default=0.05, metadata=_rng(0.0, 1.0))
    portion_max: float = field(default=0.5, metadata=_rng(0.0, 1.0, lo_open=True))
    epochs_per_round: float = field(default=2.0, metadata=_rng(0.0, 1000.0, lo_open=True))
    # "official": exp(-k_c) is the value at 0-based index floor(p*N_c)-1 of the descending
    # confidences; "paper": at 1-based rank round(p*N_c) as written in section 4.3.
    rank: Literal["official", "paper"] = "official"
    subsample: int = field(default=1, metadata=_rng(1, 64))  # official code: every 4th pixel
    # Spatial priors (section 4.4): frequency maps at this resolution, smoothed with a
    # Gaussian whose 70x70 support is given in source-image pixels.
    prior_size: list[int] = field(default_factory=lambda: [128, 256], metadata=_items(2048))
    prior_kernel: int = field(default=70, metadata=_rng(1, 4096))
    # "pixels": each class map sums to 1 over pixels, as section 4.4 says (q_n(c) ~ p(n|c));
    # "classes" (not in the paper): each pixel's maps sum to 1 over classes, p(c|n), which
    # does not multiply a class's potential by 1 / its source frequency (docs/RESEARCH_LOG.md).
    prior_norm: Literal["pixels", "classes"] = "pixels"
    # Source samples mixed into finetuning (official code: 3%, +0.25%/round, max 6%).
    source_portion_start: float = field(default=0.03, metadata=_rng(0.0, 1.0))
    source_portion_step: float = field(default=0.0025, metadata=_rng(0.0, 1.0))
    source_portion_max: float = field(default=0.06, metadata=_rng(0.0, 1.0))
    # What the source portion is a fraction of: the source images (official code) or the
    # target images, i.e. a source:target ratio that holds whatever the dataset sizes
    # (GTA5 -> Cityscapes officially mixes 3% of 24,966 = 749 source with 2,975 target: 0.25);
    # the [0, 1] range then caps the mix at one source image per target image.
    source_portion_of: Literal["source", "target"] = "source"
    # Hard-sample mining (section 5): probability of centring a target crop on a rare class.
    mine_port: float = field(default=0.5, metadata=_rng(0.0, 1.0))
    rare_threshold: float = field(default=0.001, metadata=_rng(0.0, 1.0))
    rare_min_classes: int = field(default=3, metadata=_rng(0, 254))
    # Finetuning rounds' optimisation; null = train.lr / train.schedule. A model at the end of a
    # poly schedule is destroyed by a restart at the pretraining lr, so rounds usually want less.
    lr: float | None = field(default=None, metadata=_rng(0.0, 10.0, lo_open=True))
    schedule: Literal["fixed", "poly", "round_decay"] | None = None
    lr_round_decay: float = field(default=1.4142135623730951, metadata=_rng(1.0, 100.0))
    test_scales: list[float] = field(default_factory=lambda: [1.0], metadata=_items(8.0, 16))
    test_flip: bool = False


@dataclass
class EvalConfig:
    """mIoU protocol and test-time options."""

    protocol: Literal["cityscapes19", "synthia16", "synthia13", "nthu13"] = "cityscapes19"
    scales: list[float] = field(default_factory=lambda: [1.0], metadata=_items(8.0, 16))
    flip: bool = False
    min_miou: float | None = field(default=None, metadata=_rng(0.0, 100.0))
    save_predictions: int = field(default=0, metadata=_rng(-1, MAX_COUNT))  # -1 = all
    # bilinear_logits: ours; bicubic_probs: the official code's (cbst_tf/official_eval.py).
    upsample: Literal["bilinear_logits", "bicubic_probs"] = "bilinear_logits"
    # Test scale as the longer image side in pixels (official --test-scales); null = data.input_scale.
    long_side: int | None = field(default=None, metadata=_rng(8, 16384))


@dataclass
class RuntimeConfig:
    """Where runs go and how they execute."""

    workdir: str = "runs/default"
    strategy: Literal["auto", "default", "mirrored", "multi_worker"] = "auto"
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    xla: bool = False
    seed: int = field(default=0, metadata=_rng(0, MAX_SEED))
    deterministic: bool = False
    log_every_items: int = field(default=50, metadata=_rng(1, MAX_COUNT))


@dataclass
class SynthConfig:
    """The embedded benchmark that ``cbst-tf demo`` renders (``cbst-tf data synth`` flags)."""

    size: list[int] = field(default_factory=lambda: [128, 256], metadata=_items(2048))
    n_source: int = field(default=400, metadata=_rng(1, 1_000_000))
    n_target: int = field(default=200, metadata=_rng(1, 1_000_000))
    n_val: int = field(default=100, metadata=_rng(1, 1_000_000))
    oracle: bool = True  # also train a target-supervised reference model
    # The demo's stand-in for ImageNet initialisation (cbst_tf/synth/stylized.py): pretrain the
    # network on this many style-randomised source scenes (0: start from model.weights or from
    # scratch). Its seed is fixed across demo seeds, as one set of ImageNet weights would be.
    init_images: int = field(default=0, metadata=_rng(0, 1_000_000))
    init_seed: int = field(default=100, metadata=_rng(0, MAX_SEED))
    # Optimiser steps of the init's pretraining; 0 = the demo's budget (train.steps). ImageNet
    # training is far longer than ours, so a longer init is the stand-in's other axis.
    init_steps: int = field(default=0, metadata=_rng(0, MAX_COUNT))


@dataclass
class Config:
    """The whole experiment."""

    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    selftrain: SelfTrainConfig = field(default_factory=SelfTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)


