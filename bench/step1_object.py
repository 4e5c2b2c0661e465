"""Does the Step-1 saliency map look at the object? Step 0 and Step 1 settings, side by side.

For each setting: Step 0 (the backbone from scratch on the source set) unless an existing
backbone is reused, Step 1 (the saliency branch alone, classification loss only), then the
Step-1 map's health on the source set's test images and on the target set's test images,
where it is the frozen map of Approach A (object_ratio: mean inside the object's box / mean
over the image; > 1 means on the object). All in one process, over a results tree of the
default demo (``results/prepared``, ``results/splits``).

    python bench/step1_object.py --results results [--settings demo step0_lr1e-3 ...]

SYNTHETIC data (the default demo); the evidence behind the demo's Step 0/1 defaults in
docs/decisions.md ("Saliency health").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from halsal import spec
from halsal.models import build_model
from halsal.models.weights import load_backbone, normalisation
from halsal.io import torch_load
from halsal.train.inputs import load_split
from halsal.train.loop import OptimConfig, evaluate
from halsal.train.steps import backbone, pretrain_saliency

DEMO_STEP0 = dict(epochs=25, lr=1e-4, optimizer="adam", momentum=0.9, weight_decay=5e-4, batch_size=64)
DEMO_STEP1 = dict(epochs=10, lr=1e-4, optimizer="adam", momentum=0.9, weight_decay=5e-4, batch_size=64)
# name -> (Step-0 overrides, or None to reuse the results tree's backbone; Step-1 overrides)
SETTINGS = {
    "demo": (None, {}),
    "step1_lr1e-3": (None, {"lr": 1e-3}),
    "step1_30ep": (None, {"epochs": 30}),
    "step1_30ep_lr1e-3": (None, {"epochs": 30, "lr": 1e-3}),
    "step0_lr1e-3": ({"lr": 1e-3}, {}),
    "step0_lr1e-3_step1_lr1e-3": ({"lr": 1e-3}, {"lr": 1e-3}),
    "step0_lr1e-3_40ep_step1_lr1e-3_30ep": ({"lr": 1e-3, "epochs": 40}, {"lr": 1e-3, "epochs": 30}),
    "step0_60ep": ({"epochs": 60}, {}),
    "step0_60ep_step1_30ep": ({"epochs": 60}, {"epochs": 30}),
    "step0_60ep_step1_sgd_1e-3": ({"epochs": 60}, {"optimizer": "sgd", "lr": 1e-3}),
}


def target_stats(arch, variant, backbone_pt, saliency_pt, prepared, split, input_size, fc_width):
    """The Step-1 map on the target's test images (Approach A's map before and after fine-tuning)."""
    data = load_split(prepared, split, spec.K_ALL, torch.device("cpu"), input_size, False, False,
                      normalisation=normalisation(arch))
    state = torch_load(backbone_pt)
    from halsal.models import variant_options

    model = build_model(arch, len(data.class_names), **variant_options(arch, variant), fc_width=fc_width)
    load_backbone(model, state, skip_top=True)
    model.load_state_dict(torch_load(saliency_pt), strict=False)
    return evaluate(model, data.test, data.boxes.get("test"))[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results")
    ap.add_argument("--source", default="synth_source")
    ap.add_argument("--target", default="synth_fine")
    ap.add_argument("--arch", default="alexnet")
    ap.add_argument("--variant", default="d4-pool2-eq2")
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--fc-width", type=int, default=512)
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = Path(args.results)
    src_prep, src_split = res / "prepared" / args.source, res / "splits" / args.source / "seed0.tsv"
    rows, backbones = [], {}  # Step-0 settings already trained in this run -> (backbone.pt, val acc)
    with tempfile.TemporaryDirectory(prefix="step1-") as tmp:
        for name in args.settings:
            t0 = time.perf_counter()
            s0, s1 = SETTINGS[name]
            bb = res / "models" / args.arch / "backbone.pt"
            bb_acc = json.loads(bb.with_suffix(".json").read_text()).get("val_acc")
            if s0 is not None and json.dumps(s0, sort_keys=True) in backbones:
                bb, bb_acc = backbones[json.dumps(s0, sort_keys=True)]
            elif s0 is not None:
                bb = Path(tmp) / name / "backbone.pt"
                bb.parent.mkdir(parents=True, exist_ok=True)
                info = backbone(args.arch, "scratch", bb, source_prepared=src_prep, source_split=src_split,
                                cfg=OptimConfig(**{**DEMO_STEP0, **s0}), input_size=args.input_size, fc_width=args.fc_width)
                bb_acc = info["val_acc"]
                backbones[json.dumps(s0, sort_keys=True)] = (bb, bb_acc)
            sal = Path(tmp) / name / "saliency.pt"
            sal.parent.mkdir(parents=True, exist_ok=True)
            info = pretrain_saliency(args.arch, args.variant, bb, sal, source_prepared=src_prep, source_split=src_split,
                                     cfg=OptimConfig(**{**DEMO_STEP1, **s1}), input_size=args.input_size)
            tgt = target_stats(args.arch, args.variant, bb, sal, res / "prepared" / args.target,
                               res / "splits" / args.target / "seed0.tsv", args.input_size, args.fc_width)
            row = {"setting": name, "step0_val_acc": bb_acc, "step1_val_acc": info["val_acc"],
                   "source": info["saliency"]["test"], "target": tgt, "seconds": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print("\n| setting | Step-0 val acc | Step-1 val acc | source map mean | source dead | source object_ratio "
          "| target map mean | target object_ratio | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s, t = r["source"], r["target"]
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"| {r['setting']} | {100 * r['step0_val_acc']:.0f}% | {100 * r['step1_val_acc']:.0f}% | {s['mean']:.3f} | "
              f"{s['dead_fraction']:.2f} | {f(s['object_ratio'])} | {t['mean']:.3f} | {f(t['object_ratio'])} | {r['seconds']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
