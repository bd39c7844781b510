"""How a network's output channels become Cityscapes train ids and label ids.

Every model here predicts in the 19 Cityscapes train-id positions, except a 16-class
SYNTHIA model imported as is (``weights import-mxnet --num-classes auto``), whose channel
``i`` is train id ``SYNTHIA16_TRAIN_IDS[i]``. The arg-max is taken over the channels the
protocol can predict (``eval.protocol``: a synthia16 protocol never predicts terrain, truck
or train) and then read through the protocol's merge, exactly as
:meth:`cbst_tf.evaluate.protocols.Protocol.predict` does for ``evaluate``, so ``predict``,
``evaluate --save-predictions`` and the exported SavedModel give the same classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cbst_tf.errors import ConfigError
from cbst_tf.evaluate.protocols import Protocol, get_protocol
from cbst_tf.labels import CLASS_NAMES, IGNORE, NUM_CLASSES, SYNTHIA16_TRAIN_IDS, TRAIN_ID_TO_LABEL_ID

#: Output channels -> train ids, by number of channels.
CHANNEL_TRAIN_IDS: dict[int, tuple[int, ...]] = {
    NUM_CLASSES: tuple(range(NUM_CLASSES)),
    len(SYNTHIA16_TRAIN_IDS): SYNTHIA16_TRAIN_IDS,
}

#: Train id -> Cityscapes label id (ignore -> 0, "unlabeled"), what the benchmark server reads.
LABEL_ID_LUT = np.zeros(256, np.uint8)
for _train, _label in TRAIN_ID_TO_LABEL_ID.items():
    LABEL_ID_LUT[_train] = _label


@dataclass(frozen=True)
class ClassReader:
    """The class map of ``probs (..., C)``: ``train_ids[argmax over allowed channels]``, merged."""

    protocol: Protocol
    channel_train_ids: tuple[int, ...]  # train id of each output channel
    allowed: tuple[int, ...]  # channels the arg-max may choose
    result_ids: tuple[int, ...]  # the (merged) train id that choosing allowed[k] gives

    @classmethod
    def of(cls, num_classes: int, protocol: str) -> ClassReader:
        """The reader of a ``num_classes``-channel model under ``eval.protocol``."""
        if num_classes not in CHANNEL_TRAIN_IDS:
            raise ConfigError(f"data.num_classes: {num_classes} output channels; predictions map 19 "
                              f"(Cityscapes train ids) or 16 (SYNTHIA) channels to Cityscapes classes")
        proto = get_protocol(protocol)
        ids = CHANNEL_TRAIN_IDS[num_classes]
        allowed = tuple(i for i, t in enumerate(ids) if t in proto.predictable)
        merge = proto.merge_table()
        return cls(proto, ids, allowed, tuple(int(merge[ids[i]]) for i in allowed))

    @property
    def num_channels(self) -> int:
        return len(self.channel_train_ids)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Name of each output channel."""
        return tuple(CLASS_NAMES[t] for t in self.channel_train_ids)

    def train_ids(self, probs: np.ndarray, confidence: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Train ids (uint8) and (if ``confidence``) the probability of the chosen channel per pixel."""
        probs = np.asarray(probs)
        if probs.shape[-1] != self.num_channels:
            raise ConfigError(f"data.num_classes: the model has {probs.shape[-1]} output channels, "
                              f"the config says {self.num_channels}")
        if len(self.allowed) == self.num_channels:
            sub = probs
        else:
            sub = probs[..., list(self.allowed)]
        index = np.argmax(sub, axis=-1)
        ids = np.asarray(self.result_ids, np.uint8)[index]
        if not confidence:
            return ids, None
        return ids, np.take_along_axis(sub, index[..., None], axis=-1)[..., 0].astype(np.float32, copy=False)

    def metadata(self) -> dict:
        """What a consumer of exported predictions needs (JSON-serialisable)."""
        return {
            "protocol": self.protocol.name,
            "channel_train_ids": list(self.channel_train_ids),
            "channel_names": list(self.class_names),
            "predictable_channels": list(self.allowed),
            "train_id_names": list(CLASS_NAMES),
            "train_id_to_label_id": [int(LABEL_ID_LUT[t]) for t in range(NUM_CLASSES)],
            "ignore_train_id": IGNORE,
        }


def label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids (uint8) of a train-id map: what the Cityscapes benchmark server scores."""
    return LABEL_ID_LUT[np.asarray(train_ids, np.uint8)]
