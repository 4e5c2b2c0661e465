"""Options shared by several commands; every default and choice is the config schema's
(:mod:`halsal.settings`), so `halsal --help` shows the workflow's defaults."""

from __future__ import annotations

import argparse

from halsal import settings, spec
from halsal.errors import HalsalError

D = settings.optim_defaults()


def add_optim_args(p: argparse.ArgumentParser) -> None:
    """A training step's settings: ``--settings JSON`` (what the workflow passes), or one flag each."""
    g = p.add_argument_group("optimisation (paper, Sec. 4.1: 70 epochs, lr 1e-4, weight decay 5e-3)")
    g.add_argument("--settings", default=None, metavar="JSON",
                   help="the step's settings as one JSON object with the config's keys "
                        f"({', '.join(settings.SETTINGS_KEYS)}); the workflow passes this. A flag given as well wins")
    g.add_argument("--epochs", type=int, default=D["epochs"])
    g.add_argument("--steps", type=steps_budget, default=D["steps"], metavar="N|k=N,...",
                   help="budget in optimizer steps, replacing --epochs (the last epoch is cut short); "
                        "'1=64,5=128' gives each k its own")
    g.add_argument("--eval-every", type=int, default=D["eval_every"],
                   help="optimizer steps between validations (default: every epoch; the last epoch always)")
    g.add_argument("--lr", type=float, default=D["lr"])
    g.add_argument("--lr-schedule", type=schedule_by_k, default=D["lr_schedule"], metavar="NAME|k=NAME,...",
                   help=f"{' or '.join(SCHEDULES)}: one lr, or a cosine decay to 0 over the run's optimizer steps "
                        "(not in the paper); '1=constant,5=cosine' gives each k its own")
    g.add_argument("--optimizer", choices=settings.choices("definitions.optim.optimizer"), default=D["optimizer"],
                   help="adam: L2 weight decay in the gradient; adamw: decoupled weight decay")
    g.add_argument("--saliency-lr", type=float, default=D["saliency_lr"],
                   help="learning rate of the saliency branch (default: --lr; not in the paper)")
    g.add_argument("--momentum", type=float, default=D["momentum"])
    g.add_argument("--weight-decay", type=float, default=D["weight_decay"])
    g.add_argument("--batch-size", type=int, default=D["batch_size"])
    g.add_argument("--input-size", type=int, default=settings.default("data.input_size"),
                   help="network input side (paper: 227)")
    g.add_argument("--random-crop", action=argparse.BooleanOptionalAction,
                   default=settings.default("train.augment.random_crop"), help="random crops (--no-random-crop: centre crops)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=settings.default("train.augment.flip"),
                   help="horizontal flips")
    add_device_arg(g)
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    g.add_argument("--checkpoint-seconds", type=float, default=D["checkpoint_seconds"],
                   help="seconds between resumable checkpoints (0: every epoch)")
    g.add_argument("--fc-width", type=int, default=spec.ALEXNET_FC_WIDTH,
                   help="width of fc6/fc7 (AlexNet: 4096; ResNet-152 ignores it)")
    g.add_argument("--precision", choices=settings.choices("train.precision"), default=D["precision"],
                   help="training forward pass precision (bf16: torch.autocast; evaluation stays fp32)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=D["channels_last"],
                   help="NHWC memory format for weights and batches")


def steps_budget(value):
    """``--steps``: N, or a budget per k as ``1=64,5=128`` (the config's mapping, from --settings, as it is)."""
    if value is None or isinstance(value, (int, dict)):
        return value
    text = str(value)
    try:
        if "=" not in text:
            return int(text)
        return {k.strip(): int(n) for k, n in (part.split("=", 1) for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of steps nor k=N pairs such as 1=64,5=128") from None


SCHEDULES = settings.choices("definitions.lr_schedule_name")


def schedule_by_k(value):
    """``--lr-schedule``: a schedule, or one per k as ``1=constant,5=cosine`` (the config's mapping,
    from --settings, as it is)."""
    if isinstance(value, dict):
        return value
    text = str(value)
    names = dict(part.split("=", 1) for part in text.split(",")) if "=" in text else {None: text}
    bad = [n for n in names.values() if n.strip() not in SCHEDULES]
    if bad:
        raise argparse.ArgumentTypeError(f"{text!r}: {bad[0]!r} is not a schedule ({', '.join(SCHEDULES)}); "
                                         "give one, or k=NAME pairs such as 1=constant,5=cosine")
    return text if None in names else {k.strip(): n.strip() for k, n in names.items()}


def add_device_arg(p) -> None:
    p.add_argument("--device", choices=settings.choices("train.device"), default=D["device"])


def apply_settings(parser: argparse.ArgumentParser, args: argparse.Namespace, argv) -> argparse.Namespace:
    """Re-parse with ``--settings`` as the defaults of the command's flags (each converted by its
    flag's type), so that a flag given on the command line still wins."""
    text = getattr(args, "settings", None)
    if not text:
        return args
    try:
        values = settings.settings_defaults(text)
    except ValueError as exc:
        raise HalsalError(str(exc)) from None
    sub = parser.subcommands[args.command]
    actions = {a.dest: a for a in sub._actions}
    defaults = {}
    for key, value in values.items():
        action = actions[key]
        defaults[key] = action.type(value) if action.type is not None and value is not None else value
    sub.set_defaults(**defaults)
    return parser.parse_args(argv)


def optim_config(args):
    from halsal.train.loop import OptimConfig

    return OptimConfig(epochs=args.epochs, steps=args.steps, eval_every=args.eval_every, lr=args.lr, lr_schedule=args.lr_schedule, optimizer=args.optimizer, momentum=args.momentum,
                       weight_decay=args.weight_decay, batch_size=args.batch_size,
                       checkpoint_seconds=args.checkpoint_seconds, saliency_lr=args.saliency_lr,
                       precision=args.precision, channels_last=args.channels_last)


def augment(args) -> dict:
    return {"random_crop": args.random_crop, "flip": args.flip}


def add_per_class_args(p: argparse.ArgumentParser) -> None:
    """--per-class / --per-class-seed: config datasets.<name>.per_class / per_class_seed."""
    p.add_argument("--per-class", type=int, default=None,
                   help="keep at most N images per class, a seeded sample per class (default: all)")
    p.add_argument("--per-class-seed", type=int, default=settings.default("definitions.dataset.per_class_seed"),
                   help="seed of the --per-class sample")
