"""The source set (Steps 0-1) against the backbone's classifier: an ImageNet-1k backbone keeps
its frozen 1000-way classifier in Step 1, so an ImageNet-derived source set (Tiny ImageNet) is
relabelled with ImageNet's indices, and measured both over the 1000 classes and over its own.
"""

from __future__ import annotations

import torch

from halsal.errors import HalsalError
from halsal.models.imagenet import imagenet_labels
from halsal.train.loop import accuracy


def source_labels(data, classes: int, backbone_pt) -> list[int] | None:
    """Label the source set with the backbone's classes. Step 1 keeps the backbone's classifier
    frozen: a source set with the backbone's class count is used as it is; an ImageNet-1k
    backbone with a smaller ImageNet-derived set (Tiny ImageNet) gets each class's ImageNet index
    from its wnid (halsal.models.imagenet), in place. Returns those indices (None: unchanged)."""
    if classes == len(data.class_names):
        return None
    if classes != 1000:
        raise HalsalError(
            f"the backbone {backbone_pt} has {classes} output classes but the source set has "
            f"{len(data.class_names)}: Step 1 keeps the backbone's classifier frozen, so the source set "
            f"must use the backbone's classes (ImageNet weights need ImageNet images with ImageNet labels)")
    rows = data.test_rows.drop_duplicates("label")
    mapping = imagenet_labels(dict(zip(rows["label"].astype(int), rows["path"])))
    missing = sorted(set(range(len(data.class_names))) - set(mapping))
    if missing:
        raise HalsalError(f"source classes {[data.class_names[i] for i in missing[:5]]} have no test image to read "
                          "their wnid from")
    lut = torch.tensor([mapping[i] for i in range(len(data.class_names))], device=data.test.labels.device)
    for part in (data.train, data.val, data.test):
        part.labels = lut[part.labels]
    return lut.tolist()


@torch.no_grad()
def source_accuracy(model, data, allowed: list[int] | None) -> dict:
    """Top-1 over all the classifier's classes and, for a subset of ImageNet, over its classes only."""
    out = {"top1": accuracy(model, data), "n": len(data)}
    if allowed is not None:
        idx = torch.tensor(allowed)
        was = model.training
        model.eval()
        preds = torch.cat([model(x)[:, idx.to(x.device)].argmax(1).cpu() for x, _ in data.eval_batches()])
        model.train(was)
        out["top1_restricted"] = (idx[preds] == data.labels.cpu()).float().mean().item()
        out["restricted_to"] = len(allowed)
    return out
