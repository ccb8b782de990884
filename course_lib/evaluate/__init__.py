"""Evaluation toolkit: bits/dim, classifier-based FID/KID/precision-recall on MNIST, timing.

    from course_lib.evaluate import evaluate_samples, real_floor, bits_per_dim, time_per_sample
    scores = evaluate_samples(model.sample(1000))   # vs the 10,000 real MNIST test digits
    floor = real_floor()                            # the same numbers between two halves of real data

Sub-modules: ``bpd`` (bits per dimension), ``classifier`` (the course's MNIST CNN),
``metrics`` (Fréchet distance, KID, precision/recall, mode coverage on features),
``inputs`` (value ranges and bad-input checks), ``timing`` (sampling speed).
"""
from __future__ import annotations

import logging

import torch

from course_lib.evaluate.bpd import NLL_CONVENTIONS, bits_per_dim
from course_lib.evaluate.classifier import DEFAULT_CHECKPOINT, MnistClassifier, checkpoint_path, load_classifier
from course_lib.evaluate.inputs import infer_value_range, to_classifier_input
from course_lib.evaluate.metrics import frechet_distance, kid, mmd2_unbiased, mode_coverage, precision_recall
from course_lib.evaluate.timing import time_call, time_per_sample

__all__ = [
    "bits_per_dim", "NLL_CONVENTIONS", "MnistClassifier", "load_classifier", "DEFAULT_CHECKPOINT", "checkpoint_path",
    "classifier_outputs", "evaluate_samples", "real_floor", "load_real_images", "frechet_distance", "kid",
    "mmd2_unbiased", "precision_recall", "mode_coverage", "infer_value_range", "time_per_sample", "time_call",
]

log = logging.getLogger(__name__)


@torch.no_grad()
def classifier_outputs(x: torch.Tensor, value_range: str | None = None, classifier: MnistClassifier | None = None,
                       device: torch.device | str = "cpu", batch_size: int = 500, name: str = "samples",
                       dataset: str = "mnist") -> tuple[torch.Tensor, torch.Tensor, str]:
    """Features [N, 128] and logits [N, 10] of images ``x`` [N, 1, 28, 28]; also the value range assumed.

    ``classifier`` defaults to the shipped classifier of ``dataset`` ("mnist" or "fashion_mnist").
    """
    x, value_range = to_classifier_input(x, value_range, name)
    classifier = classifier if classifier is not None else load_classifier(device=device, dataset=dataset)
    device = next(classifier.parameters()).device
    feats, logits = [], []
    for start in range(0, x.shape[0], batch_size):
        f = classifier.features(x[start:start + batch_size].to(device))
        feats.append(f.cpu())
        logits.append(classifier.head(f).cpu())
    return torch.cat(feats), torch.cat(logits), value_range


def load_real_images(split: str = "test", dataset: str = "mnist") -> torch.Tensor:
    """Real uint8 images [N, 1, 28, 28] from ``course_lib.data`` (default: the 10,000 MNIST test digits)."""
    from course_lib.data import load_dataset

    return load_dataset(dataset, split).x


def evaluate_samples(samples: torch.Tensor, real: torch.Tensor | None = None, *,
                     real_features: torch.Tensor | None = None, value_range: str | None = None,
                     real_value_range: str | None = None, classifier: MnistClassifier | None = None,
                     device: torch.device | str = "cpu", kid_subsets: int = 50, kid_subset_size: int = 1000,
                     k: int = 3, seed: int = 0, dataset: str = "mnist") -> dict:
    """Score generated MNIST-like images against real ones with the course classifier's features.

    Args:
        samples: ``[N, 1, 28, 28]`` uint8, or float in [0, 1] or [-1, 1] (inferred; see
            ``value_range`` in the result), N >= k + 1 (and >= 2 for FID; use >= 1,000 for stable numbers).
        real: reference images in any of the same ranges; default the 10,000 test images of ``dataset``.
        real_features: instead of ``real``, its features ``classifier_outputs(real)[0]`` [M, 128],
            to score many sets against one reference without recomputing them.
        dataset: "mnist" (default) or "fashion_mnist": picks the classifier (and the default ``real``).
        value_range / real_value_range: ``"uint8"``, ``"[0,1]"`` or ``"[-1,1]"`` to skip inference.

    Returns a dict with ``fid``, ``kid``, ``kid_se``, ``kid_std``, ``precision``, ``recall``,
    ``confidence``, ``label_histogram``, ``classes_covered``, ``label_entropy_bits``, ``n_samples``,
    ``n_real``, ``value_range`` (what was assumed for ``samples``).
    FID is biased upwards for small N: compare numbers only at the same N (see ``real_floor``).
    """
    if real is not None and real_features is not None:
        raise ValueError("pass either real images or real_features, not both")
    classifier = classifier if classifier is not None else load_classifier(device=device, dataset=dataset)
    f_gen, logits, assumed = classifier_outputs(samples, value_range, classifier)
    if real_features is not None:
        f_real, real_assumed = real_features, "features given"
    else:
        real = load_real_images(dataset=dataset) if real is None else real
        f_real, _, real_assumed = classifier_outputs(real, real_value_range, classifier, name="real images")
    log.info("evaluate_samples: samples assumed in %s, real images in %s", assumed, real_assumed)
    result = {"dataset": dataset, "value_range": assumed, "real_value_range": real_assumed,
              "n_samples": f_gen.shape[0], "n_real": f_real.shape[0],
              "fid": frechet_distance(f_real, f_gen)}
    result.update(kid(f_real, f_gen, kid_subsets, kid_subset_size, torch.Generator().manual_seed(seed)))
    result.update(precision_recall(f_real, f_gen, k))
    result.update(mode_coverage(logits))
    return result


def real_floor(real: torch.Tensor | None = None, n: int | None = None, *, seed: int = 0, **kwargs) -> dict:
    """The metrics between two disjoint random halves of real data: what a perfect model would score.

    ``n`` images per half (default: half of ``real``). Report it beside a model's numbers at the
    same sample size, since FID and precision/recall depend on N. ``kwargs`` go to ``evaluate_samples``.
    """
    if real is None:
        real = load_real_images(dataset=kwargs.get("dataset", "mnist"))
    half = real.shape[0] // 2
    n = half if n is None else n
    if n > half:
        raise ValueError(f"real_floor: n={n} per half but the real set has only {real.shape[0]} images; use n <= {half}.")
    order = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(seed))
    return evaluate_samples(real[order[:n]], real[order[half:half + n]], seed=seed, **kwargs)
