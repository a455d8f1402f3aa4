"""params.yaml loading: the repo's file loads, and every kind of mistake names the key."""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from mvcaug.core.params import (
    FinetuneParams, GenerateParams, ModelSettings, Params, ParamsError, PrepareParams, params_from_dict,
)
from mvcaug.io.params_file import load_params

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
        ("train:\n  workers: -1\n", "'train.workers' must be >= 0 (0 = one process per CPU core"),
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

    from mvcaug.io.params_file import load_params

    profile = load_params(REPO_ROOT / "profiles/sd15.yaml")
    assert (profile.caption.backend, profile.finetune.init, profile.finetune.codec) == ("blip2", "pretrained", "vae")
    assert (profile.embed.subfolder, profile.embed.max_length) == ("text_encoder", 77)
    default = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    switched = yaml.safe_load((REPO_ROOT / "profiles/sd15.yaml").read_text())
    assert {s: set(v) for s, v in default.items()} == {s: set(v) for s, v in switched.items()}


def test_two_phase_needs_a_shorter_second_phase():
    from mvcaug.core.params import ParamsError, params_from_dict

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


# Every field of every section, walked from the dataclasses themselves, so a field added later is covered
# without touching these tests. A dict of dataclasses (train.model_settings) is walked into, under a model
# name that train.models lists by default.
MODEL = "small_cnn"


def field_types(cls: type = Params, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(path, type hint) of every field below `cls`: ("prepare", "resolution"), ("train", "model_settings",
    "small_cnn", "optimizer"), ..."""
    hints = typing.get_type_hints(cls)
    found = []
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        if cls is Params:
            found += field_types(hint, (item.name,))
            continue
        found.append(((*path, item.name), hint))
        if typing.get_origin(hint) is dict:
            found += field_types(typing.get_args(hint)[1], (*path, item.name, MODEL))
    return found


def nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """{"a": {"b": value}} for ("a", "b")."""
    for key in reversed(path):
        value = {key: value}
    return value


def read_back(params: Params, path: tuple[str, ...]) -> Any:
    got: Any = params
    for key in path:
        got = got[key] if isinstance(got, dict) else getattr(got, key)
    return got


def literal_choices(hint: Any) -> tuple[tuple[str, ...], bool] | None:
    """The allowed values of a Literal or of a tuple of Literals (and whether it is a tuple); None otherwise."""
    if typing.get_origin(hint) is tuple:
        inner = literal_choices(typing.get_args(hint)[0])
        return (inner[0], True) if inner else None
    return (typing.get_args(hint), False) if typing.get_origin(hint) is Literal else None


LITERAL_VALUES = [
    pytest.param(path, value, many, id=f"{'.'.join(path)}={value}")
    for path, hint in field_types()
    if (choices := literal_choices(hint))
    for value, many in [(value, choices[1]) for value in choices[0]]
]
# Values that need another key to pass the checks across fields.
COMPANIONS = {("finetune", "method", "lora"): {"finetune": {"init": "pretrained"}},
              ("prepare", "source", "imagefolder"): {"pretrain": {"source": "none"}}}


FINETUNE_OPTIMIZERS = {"adamw": "torch.optim.adamw.AdamW", "adafactor": "transformers.optimization.Adafactor"}
CLASSIFIER_OPTIMIZERS = {"adamw": "torch.optim.adamw.AdamW", "adam": "torch.optim.adam.Adam",
                         "sgd": "torch.optim.sgd.SGD"}


def qualified(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def finetune_optimizer(params: Params) -> str:
    import torch

    from mvcaug.method.finetune import make_optimizer

    return qualified(make_optimizer([torch.nn.Parameter(torch.zeros(3))], params.finetune))


def classifier_optimizer(params: Params) -> str:
    import torch

    from mvcaug.judging.train import make_optimizer

    return qualified(make_optimizer(torch.nn.Linear(2, 2), params.train.model_settings[MODEL], lr=0.1))


def ema_device(params: Params) -> str:
    import torch

    from mvcaug.method.finetune import ema_device

    return str(ema_device(params.finetune, torch.device("meta")))  # meta stands for the accelerator


def generate_dtype(params: Params) -> str:
    import torch

    from mvcaug.core.devices import resolve_dtype

    # a device with no native bf16 (auto is bf16 on a CPU with AMX: tests/unit/test_devices.py)
    return str(resolve_dtype(params.generate.dtype, torch.device("meta")))


# The code that reads a Literal field, called with the loaded params, and what it must make of each value.
CONSUMERS: dict[tuple[str, ...], tuple[typing.Callable[[Params], str], dict[str, str]]] = {
    ("finetune", "optimizer"): (finetune_optimizer, FINETUNE_OPTIMIZERS),
    ("train", "model_settings", MODEL, "optimizer"): (classifier_optimizer, CLASSIFIER_OPTIMIZERS),
    ("finetune", "ema_device"): (ema_device, {"accelerator": "meta", "cpu": "cpu"}),
    ("generate", "dtype"): (generate_dtype, {"auto": "torch.float32", "float32": "torch.float32",
                                             "float16": "torch.float16", "bfloat16": "torch.bfloat16"}),
}


@pytest.mark.parametrize(("path", "value", "many"), LITERAL_VALUES)
def test_every_allowed_value_of_every_literal_field_loads_from_yaml(tmp_path, path, value, many):
    """Each section's Literal is its own: finetune.optimizer: adafactor used to be refused, and sgd accepted
    then trained with AdamW, because a second `Optimizer` type (the classifiers') replaced the first."""
    raw = nested(path, [value] if many else value)
    for section, extra in COMPANIONS.get((*path, value), {}).items():
        raw.setdefault(section, {}).update(extra)
    params = load_params(write_yaml(tmp_path, yaml.safe_dump(raw)))
    assert read_back(params, path) == ((value,) if many else value)
    if path in CONSUMERS:
        use, expected = CONSUMERS[path]
        assert value in expected, f"{'.'.join(path)}: {value!r} is allowed but its code has no case for it"
        assert use(params) == expected[value]


def test_each_optimizer_choice_reaches_the_optimizer_its_section_builds(tmp_path):
    """The YAML value, through the real loader, picks the class the stage's own builder returns: finetune's
    adafactor gives transformers' Adafactor (it was refused), the classifiers' sgd gives SGD, and neither
    section takes the other's words (finetune.optimizer: sgd used to be accepted, then trained with AdamW)."""
    import torch

    from mvcaug.judging import train
    from mvcaug.method import finetune

    paths = {path for path, _ in field_types()}  # the walk the tests above and below rely on reaches both
    assert {path[0] for path in paths} == {item.name for item in dataclasses.fields(Params)}
    assert ("train", "model_settings", MODEL, "optimizer") in paths and ("finetune", "optimizer") in paths
    assert set(FINETUNE_OPTIMIZERS) == set(typing.get_args(typing.get_type_hints(FinetuneParams)["optimizer"]))
    assert set(CLASSIFIER_OPTIMIZERS) == set(typing.get_args(typing.get_type_hints(ModelSettings)["optimizer"]))
    for name, expected in FINETUNE_OPTIMIZERS.items():
        params = load_params(write_yaml(tmp_path, f"finetune:\n  optimizer: {name}\n  learning_rate: 0.25\n"))
        optimizer = finetune.make_optimizer([torch.nn.Parameter(torch.zeros(3))], params.finetune)
        assert qualified(optimizer) == expected and optimizer.param_groups[0]["lr"] == 0.25, name
    for name, expected in CLASSIFIER_OPTIMIZERS.items():
        text = f"train:\n  model_settings:\n    {MODEL}: {{optimizer: {name}}}\n"
        settings = load_params(write_yaml(tmp_path, text)).train.model_settings[MODEL]
        optimizer = train.make_optimizer(torch.nn.Linear(2, 2), settings, lr=0.5)
        assert qualified(optimizer) == expected and optimizer.param_groups[0]["lr"] == 0.5, name
    for text in ("finetune:\n  optimizer: sgd\n", "finetune:\n  optimizer: adam\n",
                 f"train:\n  model_settings:\n    {MODEL}: {{optimizer: adafactor}}\n"):
        with pytest.raises(ParamsError, match="optimizer' is '(sgd|adam|adafactor)'; choose one of adamw, "):
            load_params(write_yaml(tmp_path, text))


def wrong_values(hint: Any) -> list[Any]:
    """Values no field of this type may hold: a wrong type, an unknown word for a Literal, NaN for a float."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return ["no-such-choice", 3]
    if origin is tuple:
        return ["not-a-list"] + [[bad] for bad in wrong_values(typing.get_args(hint)[0])]
    if origin is dict:
        return ["not-a-mapping", [1]]
    if hint is float:
        return [float("nan"), float("inf"), float("-inf"), "x", True]
    if hint is int:
        return ["x", 1.5, True]
    if hint is str:
        return [3, ["a"]]
    if hint is bool:
        return ["maybe", 1]
    raise AssertionError(f"no wrong value known for {hint!r}: teach wrong_values this type")


WRONG_VALUES = [
    pytest.param(path, hint, bad, id=f"{'.'.join(path)}={bad!r}")
    for path, hint in field_types()
    for bad in wrong_values(hint)
]


@pytest.mark.parametrize(("path", "hint", "bad"), WRONG_VALUES)
def test_every_field_refuses_a_wrong_value_in_one_line_naming_it(tmp_path, path, hint, bad):
    """Loaded from YAML, so .nan and .inf arrive as YAML writes them: a NaN guidance scale made black images."""
    path_file = write_yaml(tmp_path, yaml.safe_dump(nested(path, bad)))
    with pytest.raises(ParamsError) as info:
        load_params(path_file)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path_file}: ")
    assert f"'{'.'.join(path)}'" in message
    if choices := literal_choices(hint):
        assert all(str(choice) in message for choice in choices[0]), message


def device_fields() -> list[tuple[str, ...]]:
    return [path for path, hint in field_types() if path[-1] == "device" and hint is str]


def test_device_fields_take_auto_cpu_and_cuda_only_where_there_is_a_gpu(tmp_path):
    import torch

    assert {".".join(path) for path in device_fields()} >= {"caption.device", "embed.device"}
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for path in device_fields():
        key = ".".join(path)
        for good in ["auto", "cpu"] + (["cuda", f"cuda:{gpus - 1}"] if gpus else []):
            assert read_back(load_params(write_yaml(tmp_path, yaml.safe_dump(nested(path, good)))), path) == good
        for bad in ("gpu", "CUDA", "cuda:", "cuda:x", "mps0", ""):
            with pytest.raises(ParamsError, match=f"'{key}' is '{bad}'; choose one of auto, cpu, cuda, cuda:<n>"):
                load_params(write_yaml(tmp_path, yaml.safe_dump(nested(path, bad))))
        if not gpus:  # any cuda device on a machine without a GPU
            for bad in ("cuda", "cuda:0", "cuda:3"):
                with pytest.raises(ParamsError, match=f"'{key}' is '{bad}' but torch sees no CUDA GPU on this machine"):
                    load_params(write_yaml(tmp_path, yaml.safe_dump(nested(path, bad))))
        else:  # an index past this process's GPUs is left to the process that uses it (a pinned worker sees one)
            assert read_back(load_params(write_yaml(tmp_path, yaml.safe_dump(nested(path, f"cuda:{gpus}")))), path)


def test_dask_without_prefect_dask_installed_names_the_extra(tmp_path, monkeypatch):
    """Every section with a task_runner; `None` in sys.modules is how Python marks a module as not importable."""
    runners = [path for path, _ in field_types() if path[-1] == "task_runner"]
    assert {".".join(path) for path in runners} >= {"caption.task_runner", "generate.task_runner"}
    monkeypatch.setitem(sys.modules, "prefect_dask", None)
    for path in runners:
        with pytest.raises(ParamsError, match=rf"'{'.'.join(path)}' is 'dask' but prefect-dask is not installed; "
                                              r"run pip install '\.\[dask\]'"):
            load_params(write_yaml(tmp_path, yaml.safe_dump(nested(path, "dask"))))
        assert read_back(load_params(write_yaml(tmp_path, yaml.safe_dump(nested(path, "local")))), path) == "local"


PREFIXES_REFUSED = [
    ("{name} is {label}", "names the field {name}"),
    ("{0} {label}", "names the field {0}"),
    ("An image of {}.", "names the field {}"),
    ("{label.upper}", "names the field {label.upper}"),
    ("An image of {label", "is not a format string"),
    ("An image } of {label}", "is not a format string"),
    ("{label:d}", "cannot be formatted"),
    ("{label:{width}}", "cannot be formatted"),
    ("{label!x}", "cannot be formatted"),
]
PREFIXES_KEPT = [
    ("This is an image of {label}.", "This is an image of 7. a body"),
    ("{{digits}} {label}:", "{digits} 7: a body"),
    ("No label here.", "No label here. a body"),
]


def test_caption_prefix_takes_the_label_field_alone(tmp_path):
    """Any other field, or a stray brace, used to fail in the caption stage (KeyError, IndexError, ValueError)."""
    from mvcaug.method.caption import prefixed

    for prefix, named in PREFIXES_REFUSED:
        path = write_yaml(tmp_path, yaml.safe_dump({"caption": {"prefix": prefix}}))
        with pytest.raises(ParamsError) as info:
            load_params(path)
        message = str(info.value)
        assert "\n" not in message and "'caption.prefix'" in message and named in message, prefix
        assert "the only field is {label}" in message
    for prefix, caption in PREFIXES_KEPT:
        params = load_params(write_yaml(tmp_path, yaml.safe_dump({"caption": {"prefix": prefix}})))
        assert prefixed("7", "a body", params.caption.prefix) == caption


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("generate:\n  guidance_scale: .nan\n", "'generate.guidance_scale' is nan; it must be a finite number"),
        ("finetune:\n  learning_rate: .nan\n", "'finetune.learning_rate' is nan; it must be a finite number"),
        ("prepare:\n  val_per_class: 0\n", "'prepare.val_per_class' must be >= 1: the validation split chooses"),
        ("prepare:\n  resolution: 10000\n", "'prepare.resolution' (10000) must be <= 1024"),
        ("prepare:\n  model_resolution: 4096\n", "'prepare.model_resolution' (4096) must be <= 2048"),
        ("caption:\n  device: gpu\n", "'caption.device' is 'gpu'; choose one of auto, cpu, cuda, cuda:<n>"),
    ],
)
def test_values_that_failed_late_are_refused_at_load_time(tmp_path, text, named):
    """Each was accepted, then gave black images, NaN weights, a crash after finetune and generate, or
    25 MB PNGs; the largest sizes allowed still load."""
    path = write_yaml(tmp_path, text)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert named in str(info.value) and "\n" not in str(info.value)
    largest = load_params(write_yaml(tmp_path, "prepare:\n  resolution: 1024\n  model_resolution: 2048\n"))
    assert (largest.prepare.resolution, largest.prepare.model_resolution) == (1024, 2048)


LOOP_COUNTS = "'finetune.gradient_accumulation_steps', 'validation_images' and 'validation_steps' must be >= 1"
EVERY = "'finetune.checkpoint_every' and 'validation_every' must be >= 0 (0 = off)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("finetune:\n  gradient_accumulation_steps: 0\n", LOOP_COUNTS),
        ("finetune:\n  validation_images: 0\n", LOOP_COUNTS),
        ("finetune:\n  validation_steps: -1\n", LOOP_COUNTS),
        ("finetune:\n  checkpoint_every: -1\n", EVERY),
        ("finetune:\n  validation_every: -500\n", EVERY),
        ("finetune:\n  ema_decay: 1.5\n", "'finetune.ema_decay' must be between 0 and 1"),
        ("finetune:\n  ema_decay: -0.1\n", "'finetune.ema_decay' must be between 0 and 1"),
    ],
)
def test_the_finetune_loops_values_are_refused_at_load_time(tmp_path, text, message):
    """Checked by the fine-tuning code once the model was built, now when params.yaml loads: the same one line,
    with the file named."""
    path = write_yaml(tmp_path, text)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value) == f"{path}: {message}"
    edges = "finetune:\n  checkpoint_every: 0\n  validation_every: 0\n  ema_decay: 1.0\n  validation_images: 1\n"
    assert load_params(write_yaml(tmp_path, edges)).finetune.ema_decay == 1.0


def raised_error_names(path: Path) -> set[str]:
    """The error classes a module raises or builds: `raise X(...)`, `raise X`, `raise module.X(...)`, and any
    `X(...)` call (an error built here and raised elsewhere), by the name the class is spelled with."""
    import ast

    def name(node: ast.expr) -> str | None:
        return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None

    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Raise) and node.exc is not None:
            names.add(name(node.exc.func if isinstance(node.exc, ast.Call) else node.exc))
        elif isinstance(node, ast.Call) and (name(node.func) or "").endswith("Error"):
            names.add(name(node.func))
    return {found for found in names if found and found[0].isupper()}  # classes, not `raise error`


PARAMS_MODULES = {"mvcaug/core/params.py", "mvcaug/io/params_file.py"}
"""The params loader: the parser and validator, and the reader of the file it parses (a missing file)."""


def test_only_the_params_module_raises_params_error():
    """ParamsError means "params.yaml holds a wrong value", and every such value is refused when the file loads:
    a check that needs a model's config or the device present raises its own error (ModelError, DeviceError)."""
    root = REPO_ROOT / "mvcaug"
    raising = {path.relative_to(REPO_ROOT).as_posix() for path in root.rglob("*.py")
               if "ParamsError" in raised_error_names(path)}
    assert "mvcaug/core/params.py" in raising and raising <= PARAMS_MODULES, sorted(raising - PARAMS_MODULES)


def test_raised_error_names_sees_every_form_of_raise(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import mvcaug.core.params as p\n"
                      "def f():\n    raise ParamsError('x')\n"
                      "def g():\n    raise p.ParamsError('x') from None\n"
                      "def h():\n    raise ValueError\n"
                      "def i():\n    error = ModelError('x')\n    raise error\n")
    assert raised_error_names(module) == {"ParamsError", "ValueError", "ModelError"}
