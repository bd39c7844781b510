"""FCN-8s on VGG16 (Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015, section 4.2 / figure 3), the first backbone of the CBST paper
(Zou et al. 2018, section 5, "FCN8s-VGG16").

Architecture (width 1.0): VGG16 conv1_1 .. conv5_3 with 2x2 max pools, ``fc6`` as a 7x7
convolution with 4096 filters and ``fc7`` as a 1x1 convolution with 4096 filters (each
followed by ReLU and dropout), 1x1 score layers on fc7, pool4 and pool3, two learnable 2x
upsamplings (``Conv2DTranspose`` 4x4 stride 2, no bias, initialised to bilinear) with skip
fusion by summation, and a fixed bilinear 8x upsampling to the input size (the reference
FCN-8s freezes ``upscore8`` at bilinear; here it is the weightless
:func:`~cbst_tf.models.resize.resize_logits`, so it holds no parameters).

Alignment for any input size (a deliberate departure from the caffe model's 100-px input
padding and ``Crop`` layers): every convolution uses 'same' padding (fc6 included) and the
max pools use 'same' (ceil) padding, so pool3/pool4/pool5 have ``ceil(H/8)``,
``ceil(H/16)``, ``ceil(H/32)`` rows and all grids are anchored at the top-left corner. A
deconvolution output (``2n + 2`` rows) is cropped by 1 px (the offset of a 4x4 bilinear
kernel, which maps cell ``i`` to ``2i + 0.5``, i.e. exactly onto the finer grid's centres)
and then to the skip's shape (``2 * ceil(n/2) >= n``). Shapes therefore always match and the
same alignment holds for every ``H, W``, not only multiples of 32.

Inputs are float32 RGB 0..255; the model converts them to the caffe BGR, mean-subtracted
space Keras' VGG16 weights expect (the mean is ``data.image_mean``, so mean padding is 0).
Score layers start at zero, as in the reference (Long et al., section 4.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from cbst_tf.models.layers import BilinearInit, Conv2D, CropTo, Normalize
from cbst_tf.models.resize import ResizeLogits

# (block, number of 3x3 convolutions, filters) of VGG16's convolutional part.
VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
FC_FILTERS = 4096


def channels(filters: int, width: float) -> int:
    """Scaled channel count: ``round(filters * width)``, at least 1."""
    return max(1, int(round(filters * width)))


def build_fcn8s_vgg16(
    num_classes: int,
    width: float = 1.0,
    *,
    dropout: float = 0.5,
    upsample: bool = True,
    mean: Sequence[float] = (123.68, 116.78, 103.94),
    input_hw: tuple[int, int] | None = None,
) -> keras.Model:
    """FCN-8s/VGG16 mapping ``(N, H, W, 3)`` RGB 0..255 to logits ``(N, H, W, C)`` float32.

    ``upsample=False`` returns the same layers without the final resize: logits at 1/8.
    ``input_hw`` fixes the input size (default: any size).
    """
    image = keras.Input(shape=(*(input_hw or (None, None)), 3), name="image")
    x = Normalize(mean, bgr=True, name="normalize")(image)
    skips = {}
    for block, convs, filters in VGG16_BLOCKS:
        for i in range(1, convs + 1):
            x = Conv2D(channels(filters, width), 3, padding="same", activation="relu",
                                    name=f"block{block}_conv{i}")(x)
        x = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"block{block}_pool")(x)
        skips[block] = x
    fc = channels(FC_FILTERS, width)
    # fc6 is a plain 7x7 convolution; patches=True only picks a faster algorithm for it.
    x = Conv2D(fc, 7, padding="same", activation="relu", patches=True, name="fc6")(x)
    x = keras.layers.Dropout(dropout, name="drop6")(x)
    x = Conv2D(fc, 1, activation="relu", name="fc7")(x)
    x = keras.layers.Dropout(dropout, name="drop7")(x)

    # Score and fusion layers run in float32 so logits are float32 under mixed precision.
    def score(name: str):
        return Conv2D(num_classes, 1, kernel_initializer="zeros", name=name, dtype="float32")

    def up2(name: str):
        return keras.layers.Conv2DTranspose(num_classes, 4, strides=2, use_bias=False,
                                            kernel_initializer=BilinearInit(), name=name, dtype="float32")

    score_fr = score("score_fr")(x)
    score_pool4 = score("score_pool4")(skips[4])
    up = CropTo(1, name="upscore2_crop", dtype="float32")([up2("upscore2")(score_fr), score_pool4])
    fuse4 = keras.layers.Add(name="fuse_pool4", dtype="float32")([up, score_pool4])
    score_pool3 = score("score_pool3")(skips[3])
    up = CropTo(1, name="upscore_pool4_crop", dtype="float32")([up2("upscore_pool4")(fuse4), score_pool3])
    logits = keras.layers.Add(name="fuse_pool3", dtype="float32")([up, score_pool3])
    if upsample:
        logits = ResizeLogits(name="upscore8")([logits, image])
    return keras.Model(image, logits, name="fcn8s_vgg16")
