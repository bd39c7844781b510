"""The one typed configuration tree of an experiment.

Load order (big_vision style): dataclass defaults, then the YAML file given with ``--config``
(which may name a ``base:`` YAML that it extends, resolved relative to itself), then repeatable
``--set a.b=value`` overrides. Every unknown key, wrong type and out-of-range value raises
:class:`~cbst_tf.errors.ConfigError` with one line that names the key, the file and, for a typo,
the closest valid key. Split by job: :mod:`.schema` (the dataclasses), :mod:`.parsing` (one
value and one mapping), :mod:`.loading` (files, overrides, cross-field checks, :func:`derive`)
and :mod:`.reference` (the generated documentation).
"""

from cbst_tf.config.loading import (
    derive,
    dump_yaml,
    load_config,
    save_resolved,
    to_dict,
    validate,
)
from cbst_tf.config.parsing import parse_override
from cbst_tf.config.reference import (
    REFERENCE_END,
    REFERENCE_START,
    reference_markdown,
    update_reference_block,
)
from cbst_tf.config.schema import (
    MAX_COUNT,
    MAX_SEED,
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RuntimeConfig,
    SelfTrainConfig,
    SynthConfig,
    TrainConfig,
)

__all__ = [
    "MAX_COUNT", "MAX_SEED", "REFERENCE_END", "REFERENCE_START", "Config", "DataConfig", "EvalConfig",
    "ModelConfig", "RuntimeConfig", "SelfTrainConfig", "SynthConfig", "TrainConfig", "derive", "dump_yaml",
    "load_config", "parse_override", "reference_markdown", "save_resolved", "to_dict",
    "update_reference_block", "validate",
]
