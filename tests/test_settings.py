"""One source for every setting (halsal/settings.py): the schema's defaults and choices reach the
CLI, OptimConfig and the rules' --settings argument."""

from __future__ import annotations

import json

import pytest
import yaml

from halsal import settings
from halsal.cli import build_parser
from halsal.cli.options import apply_settings, optim_config
from halsal.errors import HalsalError


def parse(*argv):
    parser = build_parser()
    argv = list(argv)
    return apply_settings(parser, parser.parse_args(argv), argv)


FINETUNE = ["finetune", "--arch", "alexnet", "--method", "baseline", "--variant", "d4-pool2-eq2", "--dataset", "d",
            "--prepared", "p", "--backbone", "b"]


def test_cli_defaults_are_the_schemas():
    schema = yaml.safe_load(settings.SCHEMA_PATH.read_text())  # read here, not through halsal.settings
    optim = {k: v.get("default") for k, v in schema["definitions"]["optim"]["properties"].items()}
    train = schema["properties"]["train"]["properties"]
    data = schema["properties"]["data"]["properties"]
    args = parse(*FINETUNE, "--k", "1", "--seed", "0", "--split", "s", "--out-dir", "o")
    for key, value in optim.items():
        assert getattr(args, key) == value, key
    assert (args.checkpoint_seconds, args.precision, args.device) == (
        train["checkpoint_seconds"]["default"], train["precision"]["default"], train["device"]["default"])
    assert args.input_size == data["input_size"]["default"]
    split = parse("split", "--index", "i", "--seed", "0", "--out", "o")
    assert (split.val_per_class, split.too_few, split.duplicates) == (
        data["val_per_class"]["default"], data["too_few_images"]["default"], data["duplicates"]["default"])


def test_a_command_without_flags_trains_with_the_schemas_defaults():
    """What `halsal finetune` runs with no optimisation flag is what the workflow's validated
    config gives (the schema's defaults), field by field; OptimConfig() agrees with both."""
    from jsonschema import Draft202012Validator, validators

    from halsal.train.loop import OptimConfig

    def filling(cls):  # jsonschema's documented recipe: a validator that fills in defaults
        def fill(validator, properties, instance, schema):
            for key, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(key, sub["default"])
            yield from cls.VALIDATORS["properties"](validator, properties, instance, schema)
        return validators.extend(cls, {"properties": fill})

    schema = yaml.safe_load(settings.SCHEMA_PATH.read_text())
    optim: dict = {}
    filling(Draft202012Validator)({**schema["definitions"]["optim"], "definitions": schema["definitions"]}).validate(optim)
    cli = optim_config(parse("finetune", "--arch", "alexnet", "--method", "baseline", "--variant", "d4-pool2-eq2",
                             "--dataset", "d", "--prepared", "p", "--backbone", "b"))
    for field, value in optim.items():
        assert getattr(cli, field) == value == getattr(OptimConfig(), field), field


def test_step_settings_round_trip_through_the_cli():
    config = {"train": {"finetune": {"epochs": 3, "lr": 0.003, "optimizer": "adam", "saliency_lr": 1e-5, "momentum": 0.9,
                                     "weight_decay": 0.0, "batch_size": 8, "steps": 40, "eval_every": 8,
                                     "lr_schedule": "cosine"},
                        "device": "cpu", "checkpoint_seconds": 60, "precision": "bf16", "channels_last": True,
                        "augment": {"random_crop": False, "flip": True}},
              "data": {"input_size": 96}}
    text = settings.step_settings_json(config, "finetune")
    args = parse(*FINETUNE, "--settings", text)
    cfg = optim_config(args)
    assert (cfg.epochs, cfg.lr, cfg.optimizer, cfg.saliency_lr, cfg.batch_size) == (3, 0.003, "adam", 1e-5, 8)
    assert (cfg.steps, cfg.eval_every, cfg.lr_schedule) == (40, 8, "cosine")
    assert (cfg.precision, cfg.channels_last, args.device, args.input_size) == ("bf16", True, "cpu", 96)
    assert (args.random_crop, args.flip) == (False, True)
    # converted by the flag's type, as a flag's value would be: metrics.json writes 60.0
    assert isinstance(cfg.checkpoint_seconds, float) and json.dumps(cfg.checkpoint_seconds) == "60.0"
    # a flag given beside --settings wins
    assert parse(*FINETUNE, "--settings", text, "--epochs", "9").epochs == 9


def test_bad_settings_are_errors():
    with pytest.raises(HalsalError, match="unknown key.*epoch\\b"):
        parse(*FINETUNE, "--settings", json.dumps({"epoch": 3}))
    with pytest.raises(HalsalError, match="not a JSON object"):
        parse(*FINETUNE, "--settings", "{epochs: 3")


def test_the_cli_accepts_exactly_the_schemas_choices():
    """Each value the config schema allows for a setting, the CLI flag of that setting accepts,
    and one it does not allow, the flag refuses (read from the schema file, not from halsal)."""
    schema = yaml.safe_load(settings.SCHEMA_PATH.read_text())
    backends = schema["properties"]["data"]["properties"]["decode_backend"]["enum"]
    for backend in backends:
        assert parse("prepare", "--index", "i", "--out-dir", "o", "--backend", backend).backend == backend
    with pytest.raises(SystemExit):
        parse("prepare", "--index", "i", "--out-dir", "o", "--backend", "opencv")
    kinds = schema["definitions"]["dataset"]["properties"]["kind"]["enum"]
    fetch = next(a for a in build_parser().subcommands["fetch"]._actions if a.dest == "dataset")
    assert set(fetch.choices) == set(kinds) - {"synthetic"}


def test_every_fetched_kind_has_a_builder():
    from halsal.data.fetch import BUILDERS

    assert set(BUILDERS) == set(settings.FETCHED_KINDS) | {settings.FOLDER}
