"""SGD with momentum and *coupled* L2 weight decay, and the learning-rate schedules.

Paper appendix A trains with SGD (lr 1e-4 for ResNet-38, 1e-6 for FCN8s); the official MXNet
code uses momentum 0.9 and ``wd`` 5e-4. MXNet's SGD adds the decay to the gradient *before*
the momentum update::

    g' = g + wd * w;   v = momentum * v - lr * g';   w = w + v

Keras 3's ``weight_decay`` argument is *decoupled* (``w -= lr * wd * w`` outside the momentum
buffer, as in AdamW), which under momentum decays about ``1 / (1 - momentum)`` = 10x less
per step at steady state. :class:`CoupledSGD` reproduces the MXNet rule from public Keras
parts only, as TF Model Garden does:

- ``wd * w`` is the gradient of ``wd / 2 * ||w||^2``: the training loop adds
  :func:`coupled_l2_loss` to its loss (each replica its share of it, since the replicas'
  gradients are summed). In float32, ``(wd / 2) * (2 * w)`` rounds exactly like ``wd * w``,
  so the update is bit for bit the MXNet rule's.
- As in the official code, biases and normalisation parameters are not decayed, and the
  classifier layers may learn with a learning-rate multiplier (``train.classifier_lr_mult``).
  Plain momentum SGD is linear in ``lr``, so a per-variable multiplier is exactly a second
  SGD for those variables whose learning rate is ``lr(step) * mult`` (:class:`ScaledSchedule`).

Nothing here needs to know which variable Keras' ``update_step`` is updating (it has no public
way to tell under ``tf.distribute``), so any Keras 3 release TensorFlow accepts will do
(``pyproject.toml``; docs/OPTIMIZER.md records the releases tested and the equivalence with
the former ``update_step`` override).
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


class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``factor`` times a learning rate (a float or a schedule), computed in float32.

    Create it where the optimiser is created (inside ``strategy.scope()``): ``factor`` is read
    from a variable. As a graph constant, Grappler's constant folding would regroup
    ``(c * x) * factor`` in a schedule as ``x * (c * factor)``, which rounds differently from
    the learning rate times ``factor``.
    """

    def __init__(self, base, factor: float):
        self.base = base
        self.factor = float(factor)
        self._factor = keras.Variable(self.factor, dtype="float32", trainable=False, name="lr_factor")

    def __call__(self, step):
        if isinstance(self.base, keras.optimizers.schedules.LearningRateSchedule):
            base = self.base(step)
        else:
            base = ops.convert_to_tensor(self.base, "float32")
        return ops.multiply(base, self._factor)

    def get_config(self) -> dict:
        base = self.base
        if isinstance(base, keras.optimizers.schedules.LearningRateSchedule):
            base = keras.optimizers.schedules.serialize(base)
        return {"base": base, "factor": self.factor}

    @classmethod
    def from_config(cls, config: dict) -> ScaledSchedule:
        base = config["base"]
        if isinstance(base, dict):
            base = keras.optimizers.schedules.deserialize(base)
        return cls(base, config["factor"])


@dataclasses.dataclass(frozen=True)
class _Groups:
    """Which variables :class:`CoupledSGD` decays and hands to its classifier optimiser.

    A plain object: Keras' attribute tracking would take the model's variables in a list or
    tuple for optimiser state (and checkpoint them a second time). Variables are told apart
    by identity: ``build`` and ``apply`` receive the model's own variable objects, also
    under ``tf.distribute``.
    """

    decayed: tuple = ()
    multiplied: frozenset[int] = frozenset()  # ids of the variables that learn at lr * lr_mult
    built: tuple = ()  # the variables of build(), in order (apply() without variables)


class CoupledSGD(keras.optimizers.SGD):
    """Momentum SGD with MXNet-style L2 (``g + wd * w`` before momentum); ``multiplied`` variables learn at ``lr * lr_mult``.

    The L2 gradient comes from the loss: the training loop adds :func:`coupled_l2_loss`. With
    ``lr_mult != 1`` the ``multiplied`` variables are updated by ``classifier_optimizer``, a
    second momentum SGD whose learning rate is :class:`ScaledSchedule` ``(learning_rate, lr_mult)``.
    """

    def __init__(self, learning_rate, momentum: float, weight_decay: float,
                 decay: Iterable = (), multiplied: Iterable = (), lr_mult: float = 1.0,
                 name: str = "coupled_sgd"):
        # Keras' own weight_decay stays off: it is the decoupled form.
        super().__init__(learning_rate=learning_rate, momentum=float(momentum), name=name)
        self.l2 = float(weight_decay)
        self.lr_mult = float(lr_mult)
        # Deliberately a tracked list, as in the earlier update_step-based CoupledSGD (it puts the
        # decayed kernels into self.variables): checkpoints keep their object graph, so a run
        # interrupted under the earlier code resumes (with train.classifier_lr_mult == 1).
        self._decay_vars = list(decay)
        multiplied = list(multiplied) if self.lr_mult != 1.0 else []
        self._groups = _Groups(decayed=tuple(self._decay_vars), multiplied=frozenset(map(id, multiplied)))
        self.classifier_optimizer = None
        if multiplied:
            self.classifier_optimizer = keras.optimizers.SGD(
                ScaledSchedule(learning_rate, self.lr_mult), momentum=float(momentum), name=f"{name}_classifier")

    def _split(self, values: list, variables: list) -> tuple[tuple[list, list], tuple[list, list]]:
        """``(values, variables)`` of the base group and of the classifier group."""
        ids = self._groups.multiplied
        base = [(x, v) for x, v in zip(values, variables, strict=True) if id(v) not in ids]
        mult = [(x, v) for x, v in zip(values, variables, strict=True) if id(v) in ids]
        return ([x for x, _ in base], [v for _, v in base]), ([x for x, _ in mult], [v for _, v in mult])

    def build(self, variables) -> None:
        if self.built:
            return
        variables = list(variables)
        self._groups = dataclasses.replace(self._groups, built=tuple(variables))
        (_, base), (_, mult) = self._split(variables, variables)
        super().build(base)
        if self.classifier_optimizer is not None:
            self.classifier_optimizer.build(mult)

    def apply(self, grads, trainable_variables=None):
        if self.classifier_optimizer is None:
            return super().apply(grads, trainable_variables)
        if not self.built:
            self.build(trainable_variables)
        variables = list(self._groups.built if trainable_variables is None else trainable_variables)
        (base_grads, base), (mult_grads, mult) = self._split(list(grads), variables)
        self.classifier_optimizer.apply(mult_grads, mult)
        if base:
            return super().apply(base_grads, base)
        self.iterations.assign_add(1)  # apply() of no variables would not count the step
        return None

    def l2_loss(self):
        """``wd / 2 * sum ||w||^2`` over the decayed variables: its gradient is ``wd * w``."""
        if not self.l2 or not self._groups.decayed:
            return 0.0
        squares = [ops.sum(ops.square(v)) for v in self._groups.decayed]
        return ops.multiply(0.5 * self.l2, squares[0] if len(squares) == 1 else ops.sum(ops.stack(squares)))


def coupled_l2_loss(optimizer: keras.optimizers.Optimizer, num_replicas: int = 1):
    """One replica's share of the coupled L2 loss of ``optimizer`` (0.0 for other optimisers).

    Add it to the (globally averaged) loss inside the gradient tape: the replicas' gradients
    are summed, so each adds ``1 / num_replicas`` of the penalty.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer under mixed_float16
    if not isinstance(inner, CoupledSGD):
        return 0.0
    loss = inner.l2_loss()
    return loss if num_replicas == 1 else ops.divide(loss, float(num_replicas))


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
