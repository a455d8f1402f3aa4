"""params.yaml loading: the repo's file loads, and every kind of mistake names the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from mvcaug.params import (
    FinetuneParams, GenerateParams, Params, ParamsError, PrepareParams, load_params, params_from_dict,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repo_params_yaml_loads_with_every_value():
    path = REPO_ROOT / "params.yaml"
    params = load_params(path)
    assert isinstance(params, Params)
    raw = yaml.safe_load(path.read_text())
    for section, values in raw.items():
        built = getattr(params, section)
        for key, value in (values or {}).items():
            got = getattr(built, key)
            if isinstance(value, list):
                assert isinstance(got, tuple), f"{section}.{key} should become a tuple"
                assert list(got) == value
            elif isinstance(value, dict):  # train.model_settings: a dataclass per model
                assert set(got) == set(value)
                for name, settings in value.items():
                    assert all(getattr(got[name], k) == v for k, v in settings.items()), f"{section}.{key}.{name}"
            else:
                assert got == value, f"{section}.{key}: {got!r} != {value!r}"
                default = getattr(type(built)(), key)
                assert type(got) is type(default), f"{section}.{key} has type {type(got).__name__}"


def test_partial_file_keeps_defaults_and_coerces_numbers(tmp_path):
    params = load_params(write_yaml(tmp_path, "mix:\n  per_class: 3\nfinetune:\n  learning_rate: 1\nreport:\n"))
    assert params.mix.per_class == 3
    assert params.mix.fine_steps == 8  # default kept
    assert params.finetune.learning_rate == 1.0 and isinstance(params.finetune.learning_rate, float)
    assert params.prepare == PrepareParams()
    assert params.generate == GenerateParams()


def test_lists_become_tuples(tmp_path):
    params = load_params(write_yaml(tmp_path, "finetune:\n  block_out_channels: [8, 16]\ntrain:\n  seeds: [4]\n"))
    assert params.finetune.block_out_channels == (8, 16)
    assert params.train.seeds == (4,)


def test_empty_file_gives_defaults(tmp_path):
    assert load_params(write_yaml(tmp_path, "")) == Params()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("bogus:\n  a: 1\n", "bogus"),  # unknown section
        ("mix:\n  per_clas: 3\n", "mix.per_clas"),  # unknown key (typo)
        ("prepare:\n  resolution: sixteen\n", "prepare.resolution"),  # wrong type
        ("prepare:\n  resolution: 16.5\n", "prepare.resolution"),  # float for int
        ("mix:\n  seed: true\n", "mix.seed"),  # bool is not an int
        ("embed:\n  encoder: 3\n", "embed.encoder"),  # int for str
        ("finetune:\n  learning_rate: fast\n", "finetune.learning_rate"),
        ("train:\n  seeds: 3\n", "train.seeds"),  # scalar for a list
        ("finetune:\n  block_out_channels: [8, x]\n", "finetune.block_out_channels"),  # bad list item
        ("generate:\n  scheduler: foo\n", "generate.scheduler"),  # bad choice
        ("prepare:\n  source: mnist\n", "prepare.source"),
        ("embed:\n  dtype: float64\n", "embed.dtype"),
        ("caption:\n  backend: gpt\n", "caption.backend"),
        ("train:\n  settings: [real, synthetic]\n", "unknown key 'train.settings'"),
        ("train:\n  strategies: [real, synthetic]\n", "'train.strategies' is 'synthetic'; choose one of real"),
        ("generate:\n  steps: 0\n", "'generate.steps' must be positive"),  # non-positive
        ("prepare:\n  resolution: -16\n", "prepare.resolution"),
        ("mix:\n  per_class: 0\n", "mix.per_class"),
        ("finetune:\n  steps: 0\n", "'finetune.steps' must be positive"),
        ("embed:\n  max_length: 0\n", "embed.max_length"),
        ("train:\n  model_settings:\n    small_cnn: {epochs: 0}\n",
         "'train.model_settings.small_cnn' needs positive epochs and batch_size"),
        ("train:\n  seeds: []\n", "'train.seeds' is empty"),
        ("train:\n  seeds: [0, -1]\n", "'train.seeds' must be distinct integers >= 0"),
        ("generate:\n  strength: 0\n", "'generate.strength' must be in (0, 1]"),
        ("mix:\n  fine_steps: -1\n", "mix.fine_steps"),
        ("mix:\n  coarse_steps: -2\n", "mix.coarse_steps"),
        ("prepare:\n  channels: 2\n", "prepare.channels"),
        ("mix: 5\n", "mix"),  # a section that is not a mapping
    ],
)
def test_mistakes_raise_params_error_naming_the_key(tmp_path, text, named):
    path = write_yaml(tmp_path, text)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert named in message
    assert str(path) in message


def test_bad_choice_lists_the_allowed_values(tmp_path):
    with pytest.raises(ParamsError, match="ddim") as info:
        load_params(write_yaml(tmp_path, "generate:\n  scheduler: foo\n"))
    assert "'foo'" in str(info.value)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "params.yaml"
    with pytest.raises(ParamsError) as info:
        load_params(missing)
    assert str(missing) in str(info.value)


def test_invalid_yaml_and_non_mapping(tmp_path):
    with pytest.raises(ParamsError, match="YAML"):
        load_params(write_yaml(tmp_path, "mix: [1, 2\n"))
    with pytest.raises(ParamsError, match="mapping"):
        load_params(write_yaml(tmp_path, "- a\n- b\n"))


def test_params_from_dict_uses_source_in_messages():
    with pytest.raises(ParamsError, match=r"^my-source: .*generate\.scheduler"):
        params_from_dict({"generate": {"scheduler": "euler"}}, source="my-source")
    params = params_from_dict({"finetune": {"block_out_channels": [4, 8]}})
    assert params.finetune == dataclasses.replace(FinetuneParams(), block_out_channels=(4, 8))


@pytest.mark.parametrize("key", ["generate.batch_size", "embed.batch_size", "caption.batch_size"])
def test_zero_batch_size_is_rejected_at_load_time(tmp_path, key):
    section, name = key.split(".")
    with pytest.raises(ParamsError, match=f"'{key}' must be positive".replace(".", r"\.")):
        load_params(write_yaml(tmp_path, f"{section}:\n  {name}: 0\n"))


def test_a_classifier_needs_a_positive_batch_size(tmp_path):
    text = "train:\n  model_settings:\n    small_cnn: {batch_size: 0}\n"
    with pytest.raises(ParamsError, match=r"'train\.model_settings\.small_cnn' needs positive epochs and batch_size"):
        load_params(write_yaml(tmp_path, text))


def test_the_real_model_profile_loads_and_matches_params_yaml_key_for_key():
    import yaml

    from mvcaug.params import load_params

    profile = load_params(REPO_ROOT / "profiles/sd15.yaml")
    assert (profile.caption.backend, profile.finetune.init, profile.finetune.codec) == ("blip2", "pretrained", "vae")
    assert (profile.embed.subfolder, profile.embed.max_length) == ("text_encoder", 77)
    default = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    switched = yaml.safe_load((REPO_ROOT / "profiles/sd15.yaml").read_text())
    assert {s: set(v) for s, v in default.items()} == {s: set(v) for s, v in switched.items()}


def test_two_phase_needs_a_shorter_second_phase():
    from mvcaug.params import ParamsError, params_from_dict

    raw = {"train": {"phase2_epochs": 10, "model_settings": {"small_cnn": {"epochs": 5}}}}
    with pytest.raises(ParamsError, match="phase2_epochs"):
        params_from_dict(raw)
    params_from_dict({"train": {**raw["train"], "strategies": ["real", "combined"]}})  # no two_phase: fine


def test_an_unquoted_no_is_the_choice_no_not_false(tmp_path):
    """`dvc exp run -S` rewrites params.yaml without quotes, and YAML 1.1 reads `no` as false."""
    path = tmp_path / "params.yaml"
    path.write_text("finetune:\n  mixed_precision: no\n")
    assert load_params(path).finetune.mixed_precision == "no"
    path.write_text("finetune:\n  mixed_precision: yes\n")
    with pytest.raises(ParamsError, match="'finetune.mixed_precision' is True; choose one of no, fp16, bf16"):
        load_params(path)
