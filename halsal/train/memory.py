"""Will a training job fit on its GPU? An estimate of its peak memory, checked before it starts
(GitHub issue 26, item 10).

Step 1 with ResNet-152 at batch 128 needs about 30 GiB (``docs/benchmarks.md``); on a 16-24 GB
card it would run out of memory only once the image cache is up and training starts, or hours
into a fine-tuning job when its largest run (k = K) comes. :func:`check_gpu_memory` says so
before anything is put on the GPU, with the numbers and what to change.

The estimate (:func:`estimate_training_memory`), in bytes, fp32:

- ``cache``: the uint8 image cache the step uploads (3 x S x S per image, plus S x S for the
  SMIC maps and 8 for the label), for the job's largest run (:func:`split_images`);
- ``weights``: parameters and buffers;
- ``training_state``: per *trainable* parameter its gradient, the optimizer's state (SGD with
  momentum: 1 slot, Adam/AdamW: 2) and one transient copy for the update;
- ``activations``: the input batch, the tensors autograd saves for the backward pass, and twice
  the largest of them (an activation's gradient and its input's gradient live at once during the
  backward pass). They come from one forward pass of the real network on PyTorch's ``meta``
  device at the real batch and input size: shapes only, no memory and no arithmetic (about 0.5 s
  of CPU for ResNet-152), with the step's frozen parameters and batch-norm modes, so Step 1
  counts only what the saliency branch's gradient needs.

Not counted, hence the margin: cuDNN workspaces (``cudnn.benchmark`` is on), the caching
allocator's fragmentation, the evaluation batches (no grad, smaller than a training step). A job
needs ``total * (1 + MARGIN_FRACTION) + MARGIN_BYTES`` free. The CUDA context is not counted
either: ``torch.cuda.mem_get_info`` creates it before it measures, so the free memory it reports
is already net of it. ``train.precision: bf16`` is estimated as fp32 (an upper bound: autocast
cannot run on the meta device).

Why a check and not gradient accumulation: ResNet-152 and EfficientNet-Lite0 train their batch
norm in train mode in Step 2, so micro-batches would normalise with other statistics and change
the results; a job that stops with the numbers leaves the choice (a smaller batch, which also
changes the results, or a larger GPU) to the user.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from halsal import spec
from halsal.errors import HalsalError
from halsal.data.manifest import open_images

GIB = 2**30
# What the estimate leaves out (cuDNN workspaces, allocator fragmentation, evaluation batches):
# 10% of the estimate plus 1 GiB.
MARGIN_FRACTION = 0.10
MARGIN_BYTES = GIB
# Optimizer state per trainable parameter, in parameter-sized slots.
OPTIMIZER_SLOTS = {"sgd": 1, "adam": 2, "adamw": 2}
# Which parameters a step freezes: Step 1 the RGB and joint branches, Approach A (Step 2) the
# saliency branch; None: everything trains.
FROZEN = (None, "rgb_and_joint", "saliency")


@dataclass(frozen=True)
class MemoryEstimate:
    """A training job's estimated peak GPU memory, in bytes (see the module's docstring)."""

    arch: str
    batch_size: int
    input_size: int
    cache: int
    weights: int
    training_state: int
    activations: int  # at ``batch_size``; grows linearly with it

    @property
    def total(self) -> int:
        return self.cache + self.weights + self.training_state + self.activations

    @property
    def required(self) -> int:
        """What must be free on the GPU: the total with the safety margin."""
        return needed(self.total)

    def fitting_batch(self, free: int) -> int:
        """The largest batch size whose job fits in ``free`` bytes (0: not even batch 1)."""
        budget = (free - MARGIN_BYTES) / (1 + MARGIN_FRACTION) - (self.total - self.activations)
        return max(0, int(budget // (self.activations / self.batch_size)))


def needed(total: int) -> int:
    return int(total * (1 + MARGIN_FRACTION)) + MARGIN_BYTES


def estimate_training_memory(arch: str, num_classes: int, batch_size: int, input_size: int, *,
                             saliency: str = "hallucinated", model_options: dict | None = None,
                             frozen: str | None = None, optimizer: str = "sgd", momentum: float = 0.9,
                             cache: int = 0) -> MemoryEstimate:
    """Peak GPU memory of training ``arch`` (``halsal.models.build_model(arch, num_classes,
    saliency=..., **model_options)``) at ``batch_size`` and ``input_size`` with ``frozen``
    parameters (:data:`FROZEN`) and ``optimizer``; ``cache``: the bytes of the image cache the
    job holds on the GPU. Cheap: a forward pass on the meta device, cached per set of arguments."""
    if frozen not in FROZEN:
        raise ValueError(f"frozen must be one of {FROZEN}, not {frozen!r}")
    weights, trainable, activations = _model_bytes(arch, int(num_classes), int(batch_size), int(input_size), saliency,
                                                   tuple(sorted((model_options or {}).items())), frozen)
    slots = OPTIMIZER_SLOTS.get(optimizer, 2) - (optimizer == "sgd" and not momentum)
    return MemoryEstimate(arch=arch, batch_size=int(batch_size), input_size=int(input_size), cache=int(cache),
                          weights=weights, training_state=trainable * (2 + slots), activations=activations)


def _storage_key(t: torch.Tensor) -> int:
    # Views share their storage: count it once. (Meta tensors have no data pointer, but each has
    # its own storage object, alive here as long as the graph that saved it.)
    return t.untyped_storage()._cdata


@functools.lru_cache(maxsize=32)
def _model_bytes(arch: str, num_classes: int, batch_size: int, input_size: int, saliency: str,
                 model_options: tuple, frozen: str | None) -> tuple[int, int, int]:
    """(weights + buffers, trainable parameters, activations) in bytes, from one meta forward."""
    from halsal.models import build_model, frozen_bn_eval

    with torch.device("meta"):
        model = build_model(arch, num_classes, saliency=saliency, **dict(model_options))
    if frozen == "rgb_and_joint":
        for p in model.rgb_and_joint_parameters():
            p.requires_grad_(False)
    elif frozen == "saliency":
        for p in model.saliency_branch.parameters():
            p.requires_grad_(False)
    frozen_bn_eval(model)  # as fit() trains: frozen batch norm in eval mode saves less
    tensors = [*model.parameters(), *model.buffers()]
    weights = sum(t.nbytes for t in tensors)
    trainable = sum(p.nbytes for p in model.parameters() if p.requires_grad)
    channels = 4 if saliency == "external" else 3  # SMIC: the map is the 4th input channel
    x = torch.empty(batch_size, channels, input_size, input_size, device="meta")
    y = torch.zeros(batch_size, dtype=torch.long, device="meta")
    skip = {_storage_key(t) for t in (*tensors, x)}  # counted as weights / as the input
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in skip:
            saved[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    del loss
    largest = max(saved.values(), default=0)
    return weights, trainable, x.nbytes + sum(saved.values()) + 2 * largest


def split_images(split_tsv, k) -> tuple[int, int]:
    """(images, classes) a run of ``split_tsv`` at ``k`` puts on the device: its k-shot training
    rows, all validation and test rows (an upper bound: images the prepare policy skipped count)."""
    from halsal.data.splits import select

    split = pd.read_csv(split_tsv, sep="\t", keep_default_na=False)
    n = sum(len(select(split, role, k if role == "train" else None)) for role in ("train", "val", "test"))
    return n, int(split["label"].nunique())


def cache_bytes(images: int, image_shape, maps: bool = False) -> int:
    """Bytes of ``images`` cached images of ``image_shape`` (S, S, 3) on the device, with a
    uint8 S x S map each for SMIC, and an int64 label."""
    size = int(np.prod(image_shape)) + (int(image_shape[0]) * int(image_shape[1]) if maps else 0) + 8
    return int(images) * size


def pretrain_estimate(arch: str, classes: int, model_options: dict, prepared, split_tsv, cfg,
                      input_size: int) -> MemoryEstimate:
    """Step 1: the saliency branch trains on the whole source split (k = spec.K_ALL), the rest is frozen."""
    shape = open_images(prepared).shape[1:]
    images, _ = split_images(split_tsv, spec.K_ALL)
    return estimate_training_memory(arch, classes, cfg.batch_size, input_size, model_options=model_options,
                                    frozen="rgb_and_joint", optimizer=cfg.optimizer, momentum=cfg.momentum,
                                    cache=cache_bytes(images, shape))


def finetune_estimate(inputs, runs) -> MemoryEstimate:
    """Step 2: the largest run of a fine-tuning job (``FinetuneInputs``, ``FinetuneRun``s);
    each run's cache is freed before the next, so the job needs its largest run, not the sum."""
    from halsal import spec
    from halsal.models import variant_options, shape_options

    method = spec.METHODS[inputs.method]
    sizes = [split_images(run.split_tsv, run.k) for run in runs]
    images = max((n for n, _ in sizes), default=0)
    classes = max((c for _, c in sizes), default=2)
    options = {**variant_options(inputs.arch, inputs.variant), **shape_options(inputs.arch, inputs.backbone)}
    return estimate_training_memory(inputs.arch, classes, inputs.cfg.batch_size, inputs.input_size,
                                    saliency=method.saliency, model_options=options,
                                    frozen="saliency" if method.frozen else None, optimizer=inputs.cfg.optimizer,
                                    momentum=inputs.cfg.momentum,
                                    cache=cache_bytes(images, inputs.cache.shape[1:], maps=inputs.maps is not None))


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / GIB:.2f} GiB"


def check_gpu_memory(device, estimate: MemoryEstimate, *, step: str, batch_key: str) -> None:
    """Nothing on the CPU (or MPS). On CUDA a HalsalError with the numbers when the job's
    estimated peak plus the margin exceeds the GPU's free memory (``torch.cuda.mem_get_info``,
    which counts other processes' memory too). Call it before the job puts anything on the GPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return
    free, total = torch.cuda.mem_get_info(device)
    if estimate.required <= free:
        return
    e = estimate
    fits = e.fitting_batch(free)
    lever = (f"lower {batch_key} (batch {fits} would fit: activations grow linearly with the batch; a smaller "
             "batch changes the optimisation)" if fits else
             f"{batch_key} cannot help, not even batch 1 fits: the image cache and the model alone need "
             f"{_gib(needed(e.total - e.activations))}")
    raise HalsalError(
        f"{step} ({e.arch}, batch {e.batch_size}, {e.input_size} px) needs about {_gib(e.required)} of GPU memory, "
        f"but {torch.cuda.get_device_name(device)} ({device}) has {_gib(free)} free of {_gib(total)}. "
        f"Estimate: image cache {_gib(e.cache)}, weights {_gib(e.weights)}, gradients and optimizer state "
        f"{_gib(e.training_state)}, activations {_gib(e.activations)} = {_gib(e.total)}, plus "
        f"{MARGIN_FRACTION:.0%} and {_gib(MARGIN_BYTES)} for cuDNN workspaces and fragmentation. "
        f"To fix: {lever}; or lower data.input_size (activations grow with its square); or run on a GPU with at "
        f"least {_gib(e.required)} free (free memory on a shared GPU: nvidia-smi).")
