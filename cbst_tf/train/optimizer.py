"""SGD with momentum and *coupled* L2 weight decay, and the learning-rate schedules.

Paper appendix A trains with SGD (lr 1e-4 for ResNet-38, 1e-6 for FCN8s); the official MXNet
code uses momentum 0.9 and ``wd`` 5e-4. MXNet's SGD adds the decay to the gradient *before*
the momentum update::

    g' = g + wd * w;   v = momentum * v - lr * g';   w = w + v

Keras 3's ``weight_decay`` argument is *decoupled* (``w -= lr * wd * w`` outside the momentum
buffer, as in AdamW), which under momentum decays about ``1 / (1 - momentum)`` = 10x less
per step at steady state. :class:`CoupledSGD` reproduces the MXNet rule. As in the official
code, biases and BatchNorm parameters are not decayed, and the classifier layers may learn
with a learning-rate multiplier (``train.classifier_lr_mult``). Plain momentum SGD is linear
in ``lr``, so a per-variable multiplier on ``lr`` is exactly a per-variable learning rate.

Keras has no public way for ``update_step`` to tell which variable it updates (under
``tf.distribute`` it receives the replica's ``tf.Variable``): its own optimizers use the
private ``_var_key`` / ``_get_variable_index`` (keras-team/keras#21924), and so does
:class:`CoupledSGD`. ``pyproject.toml`` therefore pins ``keras`` to the tested minor
release; ``tests/test_train_optimizer.py`` fails with a clear message outside it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator

import keras
from keras import ops

from cbst_tf.config import Config, TrainConfig
from cbst_tf.errors import CbstError

_NORM_LAYERS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                keras.layers.GroupNormalization)


def _nested_layers(model: keras.Layer) -> Iterator[keras.Layer]:
    """Every layer of a functional/sequential model, descending into nested models (``.layers``)."""
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _nested_layers(layer)


def decayed_variables(model: keras.Model) -> list:
    """Trainable kernels that get weight decay: not biases, not normalisation scales/offsets."""
    norm_ids = {id(v) for layer in _nested_layers(model)
                if isinstance(layer, _NORM_LAYERS) for v in layer.weights}
    return [v for v in model.trainable_variables if len(v.shape) >= 2 and id(v) not in norm_ids]


class CoupledSGD(keras.optimizers.SGD):
    """Momentum SGD with MXNet-style L2 (``g + wd * w`` before momentum); ``multiplied`` variables learn at ``lr * lr_mult``."""

    def __init__(self, learning_rate, momentum: float, weight_decay: float,
                 decay: Iterable = (), multiplied: Iterable = (), lr_mult: float = 1.0,
                 name: str = "coupled_sgd"):
        # Keras' own decoupled weight_decay stays off: the coupled form is applied in update_step.
        super().__init__(learning_rate=learning_rate, momentum=float(momentum), name=name)
        self.l2 = float(weight_decay)
        self._decay_vars = list(decay)
        self._mult_vars = list(multiplied)
        self.lr_mult = float(lr_mult)

    def build(self, variables) -> None:
        if self.built:
            return
        super().build(variables)
        decay = {self._var_key(v) for v in self._decay_vars}
        mult = {self._var_key(v) for v in self._mult_vars}
        # Indexed like self._trainable_variables, so update_step can look its variable up
        # by _get_variable_index (which also resolves distributed replicas' components).
        self._decay_flags = [self._var_key(v) in decay for v in variables]
        self._lr_mults = [self.lr_mult if self._var_key(v) in mult else 1.0 for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        if self.l2 and self._decay_flags[index]:
            gradient = ops.add(ops.cast(gradient, variable.dtype),
                               ops.multiply(ops.cast(self.l2, variable.dtype), variable))
        if self._lr_mults[index] != 1.0:
            learning_rate = ops.multiply(learning_rate, self._lr_mults[index])
        super().update_step(gradient, variable, learning_rate)


def round_lr(base_lr: float, round_decay: float, round_: int) -> float:
    """Official code's per-round decay: ``lr / round_decay ** (R - 1)``, constant within round R."""
    return float(base_lr) / float(round_decay) ** (max(int(round_), 1) - 1)


def make_schedule(train: TrainConfig, total_steps: int, round_: int | None = None,
                  round_decay: float = math.sqrt(2.0)):
    """The learning rate of ``train.schedule``: a float (fixed, round_decay) or a schedule (poly).

    ``round_`` is the self-training round (None for pretraining, which counts as round 1).
    """
    if train.schedule == "fixed":
        return float(train.lr)
    if train.schedule == "poly":  # DeepLab "poly": lr * (1 - step / total) ** power, 0 after total steps
        return keras.optimizers.schedules.PolynomialDecay(
            train.lr, max(int(total_steps), 1), end_learning_rate=0.0, power=train.poly_power)
    if train.schedule == "round_decay":
        return round_lr(train.lr, round_decay, round_ or 1)
    raise CbstError(f"train.schedule: unknown schedule {train.schedule!r}")


def _classifier_variables(model: keras.Model) -> list:
    from cbst_tf.models import classifier_variables

    return list(classifier_variables(model))


def build_optimizer(cfg: Config, model: keras.Model, total_steps: int, round_: int | None = None,
                    classifier_vars: list | None = None) -> keras.optimizers.Optimizer:
    """The configured optimiser, built for ``model`` (call inside ``strategy.scope()``).

    Under ``mixed_float16`` it is wrapped in a dynamic ``LossScaleOptimizer``; the loop scales
    the loss with ``optimizer.scale_loss`` and the wrapper unscales before ``update_step``, so
    the weight decay sees true gradients. ``classifier_vars`` defaults to
    ``cbst_tf.models.classifier_variables(model)`` when ``train.classifier_lr_mult != 1``.
    """
    train = cfg.train
    if round_ is not None:  # a self-training round: selftrain.lr / selftrain.schedule when set
        train = dataclasses.replace(train, lr=cfg.selftrain.lr or train.lr,
                                    schedule=cfg.selftrain.schedule or train.schedule)
    if train.classifier_lr_mult != 1.0 and classifier_vars is None:
        classifier_vars = _classifier_variables(model)
    opt = CoupledSGD(make_schedule(train, total_steps, round_, cfg.selftrain.lr_round_decay),
                     momentum=train.momentum, weight_decay=train.weight_decay,
                     decay=decayed_variables(model), multiplied=classifier_vars or (),
                     lr_mult=train.classifier_lr_mult)
    if cfg.runtime.precision == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    opt.build(model.trainable_variables)
    return opt


def current_lr(optimizer: keras.optimizers.Optimizer) -> float:
    """The base learning rate the next step will use (before per-variable multipliers)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner.learning_rate
    return float(ops.convert_to_numpy(lr))
