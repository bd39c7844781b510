"""The typed config tree: load order, validation errors, resolved-config round trip."""

from __future__ import annotations

import pytest
import yaml

from cbst_tf.config import Config, dump_yaml, load_config, parse_override, reference_markdown, to_dict
from cbst_tf.errors import ConfigError


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_follow_the_paper():
    cfg = load_config()
    assert (cfg.selftrain.portion_start, cfg.selftrain.portion_step, cfg.selftrain.portion_max) == (0.2, 0.05, 0.5)
    assert cfg.selftrain.prior_kernel == 70
    assert cfg.train.momentum == 0.9 and cfg.train.weight_decay == 5e-4
    assert cfg.data.scale_range == [0.7, 1.3]


def test_load_order_defaults_base_yaml_then_overrides(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  lr: 0.5\n  steps: 7\nmodel:\n  width: 0.25\n")
    exp = write(tmp_path / "exp.yaml", "base: base.yaml\ntrain:\n  lr: 0.25\n")
    cfg = load_config(exp, ["train.steps=9", "selftrain.method=st"])
    assert cfg.train.lr == 0.25  # file beats base
    assert cfg.train.steps == 9  # --set beats file
    assert cfg.model.width == 0.25  # from base
    assert cfg.selftrain.method == "st"
    assert cfg.train.momentum == 0.9  # default


def test_yaml_scientific_notation_is_a_float(tmp_path):
    exp = write(tmp_path / "e.yaml", "train:\n  lr: 1e-6\n")
    assert load_config(exp).train.lr == pytest.approx(1e-6)
    assert load_config(None, ["train.lr=2e-4"]).train.lr == pytest.approx(2e-4)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("train:\n  lrr: 0.1\n", "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
        ("trian:\n  lr: 0.1\n", "unknown key 'trian' (did you mean 'train'?)"),
        ("train:\n  steps: many\n", "key 'train.steps' expects int, got 'many'"),
        ("train:\n  steps: 1.5\n", "key 'train.steps' expects int"),
        ("data:\n  flip: 1\n", "key 'data.flip' expects bool"),
        ("model:\n  name: vgg\n", "key 'model.name' expects one of 'fcn8s_vgg16', 'resnet38'"),
        ("selftrain:\n  portion_start: 1.5\n", "key 'selftrain.portion_start' = 1.5 is out of range (0, 1]"),
        ("train:\n  lr: 0\n", "key 'train.lr' = 0.0 is out of range (0, 10]"),
        ("data:\n  crop_size: [64]\n", "key 'data.crop_size' expects two positive numbers"),
        ("data:\n  crop_size: [64, x]\n", "key 'data.crop_size[1]' expects int"),
        ("train: 3\n", "key 'train' expects a mapping"),
        ("selftrain:\n  portion_start: 0.6\n  portion_max: 0.5\n", "exceeds selftrain.portion_max"),
    ],
)
def test_errors_name_the_key_and_file(tmp_path, text, needle):
    exp = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(exp)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message
    if "exceeds" not in needle:
        assert str(exp) in message


def test_override_errors_name_the_override():
    with pytest.raises(ConfigError, match=r"--set train.lr: key 'train.lr' expects float"):
        load_config(None, ["train.lr=fast"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["train.lr"])


def test_missing_file_invalid_yaml_and_circular_base(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = write(tmp_path / "bad.yaml", "train: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_nullable_and_list_values():
    cfg = load_config(None, ["eval.min_miou=null", "model.weights=/x/y.h5", "eval.scales=[0.5,0.75,1]"])
    assert cfg.eval.min_miou is None
    assert cfg.model.weights == "/x/y.h5"
    assert cfg.eval.scales == [0.5, 0.75, 1.0]


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(None, ["train.lr=0.125", "data.crop_size=[32,64]"])
    path = write(tmp_path / "resolved.yaml", dump_yaml(cfg))
    again = load_config(path)
    assert again == cfg
    assert yaml.safe_load(path.read_text())["train"]["lr"] == 0.125


def test_parse_override_parses_yaml_values():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a=true") == ("a", True)
    assert parse_override("a=x=y") == ("a", "x=y")


def test_reference_lists_every_leaf_key():
    ref = reference_markdown()
    for key in ("`train.lr`", "`selftrain.rank`", "`runtime.precision`", "`eval.protocol`", "`data.crop_size`"):
        assert key in ref
    leaves = sum(len(v) if isinstance(v, dict) else 1 for v in to_dict(Config()).values())
    assert ref.count("\n| `") == leaves
