"""Metrics of class-conditional generators, over samples whose classes are balanced (0, 1,
..., C-1, 0, 1, ...: ``sampling.balanced_labels``):

- intra-FID (Miyato and Koyama 2018): the mean over classes of the FID between the class's
  samples and the class's own reference statistics;
- class accuracy: the share of samples that the dataset's classifier (the mnist or
  fashion_mnist extractor's logits) assigns to the class asked for; ``class_acc_real``
  beside it is the same classifier's accuracy on the real test split, the ceiling.
"""
import numpy as np

from gan_jax.eval import features as features_lib
from gan_jax.eval import metrics as M
from gan_jax.eval.metrics import MetricError

METRICS = ("intra_fid", "class_acc")
# The scalars each metric logs, and the per-class list its eval.jsonl line carries too.
FIELDS = {"intra_fid": ("intra_fid",), "class_acc": ("class_acc", "class_acc_real")}
PER_CLASS = {"intra_fid": ("intra_fid_per_class",), "class_acc": ("class_acc_per_class",)}


def class_moments(features_ND, labels_N, num_classes: int, what: str = "samples"):
    """The moments of each class's rows, classes 0 to ``num_classes - 1``."""
    features, labels = np.asarray(features_ND), np.asarray(labels_N)
    counts = np.bincount(labels, minlength=num_classes)
    if len(counts) > num_classes:
        raise MetricError(f"The {what} have class labels up to {len(counts) - 1}, and there "
                          f"are {num_classes} classes (0 to {num_classes - 1}).")
    if counts.min() < 2:
        k = int(counts.argmin())
        raise MetricError(f"Per-class statistics need at least 2 {what} of each class, and "
                          f"class {k} has {counts[k]}; use more {what}.")
    return tuple(M.moments(features[labels == k]) for k in range(num_classes))


def intra_fid(ref_class_moments, fake_features_ND, fake_labels_N):
    """(mean, per-class list) of FID(class k's samples, class k's reference moments)."""
    fake = class_moments(fake_features_ND, fake_labels_N, len(ref_class_moments))
    per_class = [M.frechet_distance(r, f) for r, f in zip(ref_class_moments, fake)]
    return float(np.mean(per_class)), per_class


def class_accuracy(logits_NC, labels_N, num_classes: int):
    """(share of all rows whose logits' argmax is their label, per-class list)."""
    labels = np.asarray(labels_N)
    hit = np.asarray(logits_NC).argmax(-1) == labels
    return float(hit.mean()), [float(hit[labels == k].mean()) for k in range(num_classes)]


def check(metrics, num_classes: int | None, extractor, *, num: int | None = None,
          reference=None) -> None:
    """Fails before any image is drawn when a conditional metric cannot be computed.
    ``num_classes``: the generator's (0: unconditional, None: not known yet);
    ``extractor``: a ``features.Extractor`` or its name; ``reference``: when known."""
    wanted = [m for m in metrics if m in METRICS]
    if not wanted:
        return
    if num_classes == 0:
        them = "it" if len(wanted) == 1 else "them"
        raise MetricError(f"{' and '.join(wanted)} need{'s' * (len(wanted) == 1)} a "
                          f"class-conditional generator, and this one is unconditional; drop "
                          f"{them} from the metrics or evaluate a conditional model "
                          "(model.conditional=True).")
    name = extractor if isinstance(extractor, str) else extractor.name
    classes = (features_lib.dataset_classes(name) if isinstance(extractor, str)
               else extractor.classes)
    if "class_acc" in wanted:
        if not classes:
            raise MetricError(f"class_acc needs a classifier of the dataset's classes, which "
                              f"gan_jax has for MNIST and Fashion-MNIST (the mnist and "
                              f"fashion_mnist extractors), and the {name} extractor is none; "
                              "use the dataset's classifier (--extractor, eval.extractor) or "
                              "drop class_acc.")
        if num_classes and num_classes != classes:
            raise MetricError(f"class_acc: the generator has {num_classes} classes and the "
                              f"{name} classifier {classes}; use the classifier of the "
                              "dataset the generator was trained on.")
    if "intra_fid" in wanted and num_classes and num is not None and num < 2 * num_classes:
        raise MetricError(f"intra_fid needs at least 2 samples of each of {num_classes} "
                          f"classes, got num={num}; evaluate at least {2 * num_classes}.")
    if "intra_fid" in wanted and reference is not None:
        have = reference.class_moments
        if have is None:
            raise MetricError("intra_fid needs per-class reference statistics, and this "
                              "reference has none; build it with per_class=True "
                              "(evaluate.prepare or reference.get).")
        if num_classes and len(have) != num_classes:
            raise MetricError(f"intra_fid: the generator has {num_classes} classes and the "
                              f"reference dataset {len(have)}; evaluate against the dataset "
                              "the generator was trained on.")


def compute(fake: features_lib.Features, labels_N, reference, extractor, metrics) -> dict:
    """The conditional metrics' values from the samples' features and logits; ``labels_N``
    are the classes they were drawn for."""
    out = {}
    if "intra_fid" in metrics:
        out["intra_fid"], out["intra_fid_per_class"] = intra_fid(
            reference.class_moments, fake.features, labels_N)
    if "class_acc" in metrics:
        out["class_acc"], out["class_acc_per_class"] = class_accuracy(
            fake.logits, labels_N, extractor.classes)
        # The classifier's accuracy on the whole real test split, measured when it was
        # trained, through the same logits.
        out["class_acc_real"] = float(extractor.info["classifier_test_accuracy"])
    return out
