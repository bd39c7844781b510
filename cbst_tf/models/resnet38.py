"""ResNet-38 "model A" (Wu, Shen, van den Hengel, "Wider or Deeper: Revisiting the ResNet
Model for Visual Recognition", 2016), the stronger backbone of the CBST paper (Zou et al.
2018, section 5), as the fully convolutional ``fcrna_model_a1`` of the official MXNet code
(itijyou/ademxapp ``util/symbol/resnet_v2.py``, used unchanged by yzou2/CBST as ``rna-a1``
with ``feat_stride 8``).

Pre-activation units (BN -> ReLU -> conv); the first unit of a level projects the shortcut
with a 1x1 convolution applied to the *pre-activated* input (as the official code does):

=====  ===========================  ======  ========  =========================
level  units (filters)              stride  dilation  notes
=====  ===========================  ======  ========  =========================
B1     conv 3x3, 64                 1       1         no BN before, no bias
B2     3 x basic (128, 128)         2       1         output stride 2
B3     3 x basic (256, 256)         2       1         output stride 4
B4     6 x basic (512, 512)         2       1         output stride 8
B5     3 x basic (512, 1024)        1       2         first conv of 5a: dilation 1
B6     1 x bottleneck (512,1024,2048)  1    4         1x1-3x3-1x1, dropout 0.3
B7     1 x bottleneck (1024,2048,4096) 1    4         1x1-3x3-1x1, dropout 0.5
=====  ===========================  ======  ========  =========================

then BN -> ReLU and the segmentation head: 3x3 dilation-12 conv with 512 filters (+ bias,
ReLU) and a 3x3 dilation-12 classifier (+ bias). Dropout sits before the last 1x1 conv of
the B6/B7 residual branches (official ``dropout=True``: rates 0.3 and 0.5); ``dropout``
here sets the B7 rate and B6 gets ``0.6 * dropout``, so the default 0.5 is the official
pair. BatchNorm eps is ``bn_epsilon``: 1e-5 by default (ademxapp's symbols), 1.001e-5 in
CBST's copy of them (``model.bn_epsilon`` in the ResNet-38 experiment configs); ``freeze_bn``
keeps its statistics fixed (the official fine-tuning sets ``bn_use_global_stats=True``).

Alignment: stride-2 convolutions pad 1 px on every side ("caffe/MXNet" padding, explicit
``ZeroPadding2D`` + 'valid') rather than Keras 'same' (which pads only bottom/right for even
sizes and would misalign the 3x3 branch against the 1x1 stride-2 shortcut by one pixel).
Every level therefore has ``ceil(H / stride)`` rows, anchored at the top-left corner.

Input normalisation matches the official ``rna`` models: ``(x/255 - mean) / std`` with the
ImageNet std (0.229, 0.224, 0.225), using ``data.image_mean`` as the mean so mean padding
is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from cbst_tf.models.fcn8s import channels
from cbst_tf.models.layers import Conv2D, FrozenBatchNorm, Normalize
from cbst_tf.models.resize import ResizeLogits

IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPSILON = 1e-5
# (level, units, filters per conv, kernels, stride of the first unit, dilation of the level)
LEVELS = (
    (2, 3, (128, 128), (3, 3), 2, 1),
    (3, 3, (256, 256), (3, 3), 2, 1),
    (4, 6, (512, 512), (3, 3), 2, 1),
    (5, 3, (512, 1024), (3, 3), 1, 2),
    (6, 1, (512, 1024, 2048), (1, 3, 1), 1, 4),
    (7, 1, (1024, 2048, 4096), (1, 3, 1), 1, 4),
)
HEAD_FILTERS = 512
HEAD_DILATION = 12


class _Builder:
    """Creates named layers with the shared options (width, BN flavour)."""

    def __init__(self, width: float, freeze_bn: bool, bn_epsilon: float = BN_EPSILON):
        self.width = width
        self.bn_epsilon = bn_epsilon
        self.bn_cls = FrozenBatchNorm if freeze_bn else keras.layers.BatchNormalization

    def bn_relu(self, x, name: str):
        x = self.bn_cls(epsilon=self.bn_epsilon, momentum=0.9, name=f"bn{name}")(x)
        return keras.layers.ReLU(name=f"res{name}_relu")(x)

    def conv(self, x, filters: int, kernel: int, name: str, stride: int = 1, dilation: int = 1):
        filters = channels(filters, self.width)
        if stride > 1 and kernel > 1:
            x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
            padding = "valid"
        else:
            padding = "valid" if kernel == 1 else "same"
        return Conv2D(filters, kernel, strides=stride, dilation_rate=1 if kernel == 1 else dilation,
                                   padding=padding, use_bias=False, name=name)(x)

    def unit(self, x, name: str, filters, kernels, stride=1, dilation=1, first_dilation=None,
             project=False, dropout=0.0):
        """One pre-activation residual unit (official ``res_block``)."""
        pre = self.bn_relu(x, f"{name}_branch2a")
        branch = self.conv(pre, filters[0], kernels[0], f"res{name}_branch2a", stride,
                           dilation if first_dilation is None else first_dilation)
        for i in range(1, len(filters)):
            sub = f"{name}_branch2b{i}"
            branch = self.bn_relu(branch, sub)
            if dropout > 0.0 and i == len(filters) - 1:
                branch = keras.layers.Dropout(dropout, name=f"res{sub}_do")(branch)
            branch = self.conv(branch, filters[i], kernels[i], f"res{sub}", 1, dilation)
        shortcut = self.conv(pre, filters[-1], 1, f"res{name}_branch1", stride) if project else x
        return keras.layers.Add(name=f"res{name}")([shortcut, branch])


def resnet38_trunk(image, width: float = 1.0, dropout: float = 0.5, freeze_bn: bool = False,
                   mean: Sequence[float] = (123.68, 116.78, 103.94), bn_epsilon: float = BN_EPSILON):
    """The ResNet-38 (A1, output stride 8) features after ``bn7``/``relu7`` for ``image``."""
    b = _Builder(width, freeze_bn, bn_epsilon)
    std = tuple(255.0 * s for s in IMAGENET_STD)
    x = Normalize(mean, std, name="normalize")(image)
    x = b.conv(x, 64, 3, "conv1a")
    rates = {6: 0.6 * dropout, 7: dropout}
    for level, units, filters, kernels, stride, dilation in LEVELS:
        # The first unit's leading conv keeps the previous level's dilation (official
        # inc_dilate: only the later convs of the unit get the increased rate).
        first = dilation // 2 if level == 5 else dilation
        x = b.unit(x, f"{level}a", filters, kernels, stride, dilation, first_dilation=first,
                   project=True, dropout=rates.get(level, 0.0))
        for i in range(1, units):
            x = b.unit(x, f"{level}b{i}", filters, kernels, 1, dilation)
    x = b.bn_cls(epsilon=b.bn_epsilon, momentum=0.9, name="bn7")(x)
    return keras.layers.ReLU(name="relu7")(x)


def build_resnet38(
    num_classes: int,
    width: float = 1.0,
    *,
    dropout: float = 0.5,
    freeze_bn: bool = False,
    upsample: bool = True,
    mean: Sequence[float] = (123.68, 116.78, 103.94),
    input_hw: tuple[int, int] | None = None,
    bn_epsilon: float = BN_EPSILON,
) -> keras.Model:
    """ResNet-38 segmentation network: ``(N, H, W, 3)`` RGB 0..255 to float32 logits.

    ``upsample=False`` returns the logits at output stride 8 (same layers and weights).
    ``input_hw`` fixes the input size (default: any size).
    """
    image = keras.Input(shape=(*(input_hw or (None, None)), 3), name="image")
    x = resnet38_trunk(image, width, dropout, freeze_bn, mean, bn_epsilon)
    x = Conv2D(channels(HEAD_FILTERS, width), 3, padding="same", dilation_rate=HEAD_DILATION,
                            activation="relu", name="classifier_conv6a")(x)
    logits = Conv2D(num_classes, 3, padding="same", dilation_rate=HEAD_DILATION,
                                 name="classifier_score", dtype="float32")(x)
    if upsample:
        logits = ResizeLogits(name="upsample_logits")([logits, image])
    return keras.Model(image, logits, name="resnet38")
