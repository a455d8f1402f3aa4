"""How good are the synthetic images? Label fidelity, FID/KID, diversity and memorisation as DVC metrics.

Classifier accuracy with vs without synthetic images says whether they help, not why. These measures
separate the causes: synthetic images of the wrong class (fidelity), off the real distribution
(FID, KID), collapsed onto a few modes (diversity), or copies of the training images (memorisation).

Features come from a model trained on real images only, through a generic `feature_fn` (pixels ->
(n, d)) and `predict_fn` (pixels -> (n, K) class scores); FID and KID can also be measured in a
second feature space (`inception_fn`: mvcaug.judging.inception's Inception-v3 pool features). Images are
(n, C, H, W) float tensors in [-1, 1]; labels are class names. Everything here is pure: no I/O, no
global state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import scipy.spatial.distance
import torch
from torch import nn

__all__ = ["TensorFn", "WITHIN_RMSE", "classifier_feature_fns", "extract", "label_fidelity", "frechet_distance",
    "kernel_inception_distance", "diversity", "nearest_neighbours", "memorisation", "distribution_distances",
    "quality_report"]

log = logging.getLogger(__name__)

TensorFn = Callable[[torch.Tensor], torch.Tensor]
Features = np.ndarray | torch.Tensor

# A synthetic image whose pixel RMSE (on the [-1, 1] scale) to its nearest real training image is
# below this counts in memorisation.within_rmse ("within RMSE 0.1"; the filter's near copies are another
# rule, a quantile of validation distances): about 13/255 grey levels RMS. Calibrated without test images on
# scikit-learn's digits at 16 px: among the 450 digits of the default split that are not test images
# (train, validation, reference), fewer than 1% of distinct digits are this close to their nearest
# neighbour (1st percentile 0.144, median 0.241; tests/unit/test_quality_task.py recomputes them).
# Pixel RMSE misses shifted or flipped copies: use a feature space (with its own threshold) for those.
WITHIN_RMSE = 0.1

# The original KID (Binkowski et al. 2018) uses subsets of 1000 features; capped by the set sizes here.
KID_SUBSET_SIZE = 1000


def classifier_feature_fns(model: nn.Module) -> tuple[TensorFn, TensorFn]:
    """(feature_fn, predict_fn) for a timm model (forward_features + forward_head) or one with
    `.features` and `.head` (SmallCNN). Puts the model in eval mode: features must depend neither on
    the rest of the batch (BatchNorm) nor on chance (Dropout). Inputs move to the model's device/dtype."""
    model.eval()
    parameter = next(model.parameters())

    def _moved(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=parameter.device, dtype=parameter.dtype)

    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        def timm_features(x: torch.Tensor) -> torch.Tensor:
            # methods checked with hasattr, which nn.Module.__getattr__ types as Tensor | Module
            return model.forward_head(model.forward_features(_moved(x)), pre_logits=True)  # type: ignore[operator]

        return timm_features, lambda x: model(_moved(x))
    if isinstance(getattr(model, "features", None), nn.Module) and isinstance(getattr(model, "head", None), nn.Module):
        # submodules checked with isinstance, which does not narrow nn.Module.__getattr__'s Tensor | Module
        return ((lambda x: model.features(_moved(x))),  # type: ignore[operator]
                (lambda x: model.head(model.features(_moved(x)))))  # type: ignore[operator]
    raise TypeError(f"{type(model).__name__}: need forward_features/forward_head (timm) or .features/.head")


@torch.no_grad()
def extract(fn: TensorFn, pixels: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """fn applied batch by batch, as one (n, d) float64 array (batches bound the memory)."""
    outputs = []
    for start in range(0, len(pixels), batch_size):
        out = fn(pixels[start : start + batch_size])
        if out.ndim != 2:
            raise ValueError(f"expected (batch, d) outputs, got shape {tuple(out.shape)}: pool/flatten first")
        outputs.append(out.detach().float().cpu().numpy().astype(np.float64))
    if not outputs:
        raise ValueError("no images")
    return np.concatenate(outputs)


def _matrix(features: Features, name: str, min_rows: int = 2) -> np.ndarray:
    """Features as a float64 (n, d) array, with at least `min_rows` rows."""
    array = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    array = array.astype(np.float64)
    if array.ndim != 2 or len(array) < min_rows:
        raise ValueError(f"{name}: need a (n >= {min_rows}, d) matrix, got shape {array.shape}")
    return array


def label_fidelity(
    predict_fn: TensorFn,
    synthetic_pixels: torch.Tensor,
    synthetic_labels: Sequence[str],
    classes: Sequence[str],
    batch_size: int = 256,
) -> dict[str, float]:
    """Accuracy of the real-only classifier on the synthetic images: per class and overall ("_all").
    Classes without synthetic images are left out (an accuracy over nothing is undefined)."""
    index = {label: i for i, label in enumerate(classes)}
    unknown = sorted(set(synthetic_labels) - set(index))
    if unknown or len(synthetic_labels) != len(synthetic_pixels):
        raise ValueError(f"labels must name one class of `classes` per image; unknown: {unknown}")
    targets = np.array([index[label] for label in synthetic_labels], dtype=np.int64)
    correct = extract(predict_fn, synthetic_pixels, batch_size).argmax(1) == targets
    fidelity = {label: float(correct[targets == i].mean()) for label, i in index.items() if (targets == i).any()}
    fidelity["_all"] = float(correct.mean())
    return fidelity


def _covariance_factor(centred: np.ndarray) -> np.ndarray:
    """R with R @ R.T equal to the (ddof=1) covariance of the centred rows: the rows themselves when
    there are no more of them than dimensions (Inception: 2048), else the covariance's square root."""
    n, d = centred.shape
    if n <= d:
        return centred.T / np.sqrt(n - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / (n - 1))
    return eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))


def frechet_distance(real_features: Features, synthetic_features: Features) -> float:
    """FID between Gaussians fitted to two feature sets: |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrt(S1 S2)).

    tr sqrt(S1 S2) is the sum of the singular values of R1^T R2 for any factors S = R R^T (the
    eigenvalues of S1 S2 are their squares), so it is exact for singular covariances too (fewer images
    than dimensions) without pytorch-fid's eps and complex sqrtm, and costs O(n^2 d) with n <= d
    images instead of sqrtm's O(d^3) (30 s for d = 2048 on 2 cores). Estimates from few images are
    biased upwards: compare FIDs only at equal set sizes.
    """
    real = _matrix(real_features, "real_features")
    synthetic = _matrix(synthetic_features, "synthetic_features")
    if real.shape[1] != synthetic.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {synthetic.shape[1]}")
    centred_real, centred_synthetic = real - real.mean(0), synthetic - synthetic.mean(0)
    traces = sum(np.sum(c**2) / (len(c) - 1) for c in (centred_real, centred_synthetic))
    cross = _covariance_factor(centred_real).T @ _covariance_factor(centred_synthetic)
    trace_sqrt_product = np.linalg.svd(cross, compute_uv=False).sum()
    diff = real.mean(0) - synthetic.mean(0)
    return float(diff @ diff + traces - 2 * trace_sqrt_product)


def _unbiased_polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the kernel k(a, b) = (a.b / d + 1)^3 (the diagonals of Kxx, Kyy left out)."""
    d = x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    m, n = len(x), len(y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def kernel_inception_distance(
    real_features: Features,
    synthetic_features: Features,
    subsets: int = 10,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: the mean and std of the unbiased polynomial-kernel MMD^2 over random subsets (drawn without
    replacement, seeded). Unbiased, so it can be slightly negative and is comparable across set sizes.
    subset_size is capped by the smaller set; with it equal to both sizes every subset is the whole set."""
    real = _matrix(real_features, "real_features")
    synthetic = _matrix(synthetic_features, "synthetic_features")
    if real.shape[1] != synthetic.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {synthetic.shape[1]}")
    size = min(subset_size, len(real), len(synthetic))
    if size < 2 or subsets < 1:
        raise ValueError(f"KID needs subset_size >= 2 and subsets >= 1, got {size} and {subsets}")
    rng = np.random.default_rng(seed)
    mmds = [
        _unbiased_polynomial_mmd2(
            real[rng.choice(len(real), size, replace=False)], synthetic[rng.choice(len(synthetic), size, replace=False)]
        )
        for _ in range(subsets)
    ]
    return float(np.mean(mmds)), float(np.std(mmds))


def diversity(features: Features, labels: Sequence[str]) -> dict[str, float]:
    """Mean pairwise Euclidean feature distance within each class, and "_all": their mean over classes.
    Mode collapse shows as synthetic values well below the real ones. Classes with one image are left
    out (no pair); memory is quadratic in the largest class."""
    array = _matrix(features, "features", min_rows=1)
    if len(labels) != len(array):
        raise ValueError(f"{len(labels)} labels for {len(array)} feature rows")
    label_array = np.asarray(labels)
    spread = {
        str(label): float(scipy.spatial.distance.pdist(array[label_array == label]).mean())
        for label in sorted(set(labels))
        if (label_array == label).sum() >= 2
    }
    if not spread:
        raise ValueError("diversity needs a class with at least two images")
    spread["_all"] = float(np.mean(list(spread.values())))
    return spread


def nearest_neighbours(query: torch.Tensor, pool: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, its nearest pool row's index and the RMSE between them.

    Both sets are scanned in blocks (memory stays batch_size^2); the RMSE is then recomputed directly,
    because cdist's matrix-product shortcut leaves exact copies a little above 0."""
    best = torch.full((len(query),), float("inf"), dtype=torch.float64)
    nearest = torch.zeros(len(query), dtype=torch.int64)
    for q0 in range(0, len(query), batch_size):
        q = query[q0 : q0 + batch_size].double()
        for r0 in range(0, len(pool), batch_size):
            distance, index = torch.cdist(q, pool[r0 : r0 + batch_size].double()).min(1)
            closer = distance < best[q0 : q0 + len(q)]
            best[q0 : q0 + len(q)][closer] = distance[closer]
            nearest[q0 : q0 + len(q)][closer] = index[closer] + r0
    rmse = (query.double() - pool[nearest].double()).pow(2).mean(1).sqrt()
    return rmse.numpy(), nearest.numpy()


def memorisation(
    synthetic_pixels: torch.Tensor,
    real_pixels: torch.Tensor,
    threshold: float | None = None,
    feature_fn: TensorFn | None = None,
    batch_size: int = 256,
) -> dict:
    """Each synthetic image's RMSE to its nearest real training image, in pixel space or, given
    feature_fn, in that feature space; within_threshold counts those closer than `threshold`.

    threshold defaults to WITHIN_RMSE in pixel space and must be given for a feature space.
    Returns {"distance": (n,) array, "nearest": (n,) int64 indices into real_pixels, "min", "median",
    "mean", "within_threshold": int, "threshold", "space": "pixels" | "features"}."""
    if len(synthetic_pixels) == 0 or len(real_pixels) == 0:
        raise ValueError("memorisation needs synthetic and real images")
    if feature_fn is None:
        if synthetic_pixels.shape[1:] != real_pixels.shape[1:]:
            shapes = tuple(synthetic_pixels.shape[1:]), tuple(real_pixels.shape[1:])
            raise ValueError(f"image shapes differ: {shapes[0]} vs {shapes[1]}")
        space, threshold = "pixels", WITHIN_RMSE if threshold is None else threshold
        query, training = synthetic_pixels.flatten(1), real_pixels.flatten(1)
    else:
        if threshold is None:
            raise ValueError("memorisation in a feature space needs an explicit threshold")
        space = "features"
        query = torch.from_numpy(extract(feature_fn, synthetic_pixels, batch_size))
        training = torch.from_numpy(extract(feature_fn, real_pixels, batch_size))
    distance, nearest = nearest_neighbours(query, training, batch_size)
    return {
        "distance": distance,
        "nearest": nearest,
        "min": float(distance.min()),
        "median": float(np.median(distance)),
        "mean": float(distance.mean()),
        "within_threshold": int((distance < threshold).sum()),
        "threshold": float(threshold),
        "space": space,
    }


def distribution_distances(
    real_features: Features,
    synthetic_features: Features,
    kid_subsets: int = 10,
    kid_subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> dict[str, float]:
    """FID and KID between two feature sets: {"fid", "kid_mean", "kid_std"}."""
    kid_mean, kid_std = kernel_inception_distance(real_features, synthetic_features, kid_subsets, kid_subset_size, seed)
    return {"fid": frechet_distance(real_features, synthetic_features), "kid_mean": kid_mean, "kid_std": kid_std}


def quality_report(
    feature_fn: TensorFn,
    predict_fn: TensorFn,
    real_pixels: torch.Tensor,
    real_labels: Sequence[str],
    synthetic_pixels: torch.Tensor,
    synthetic_labels: Sequence[str],
    classes: Sequence[str],
    rmse_threshold: float = WITHIN_RMSE,
    kid_subsets: int = 10,
    kid_subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
    batch_size: int = 256,
    inception_fn: TensorFn | None = None,
    comparison_pixels: torch.Tensor | None = None,
) -> dict[str, float]:
    """Every measure, as one flat dict of finite floats ready to be written as DVC metrics.

    real_* is the real training split (what the generator saw, and the classifier's training set):
    memorisation and real diversity are measured against it. FID and KID compare the synthetic set
    with comparison_pixels (FID's comparison set: real images neither model saw), or with real_pixels
    when none are given.
    Keys: fidelity.<class>, fidelity._all, fid, kid_mean, kid_std, diversity.{synthetic,real}.<class>,
    diversity.{synthetic,real}._all, memorisation.{within_rmse,within_rmse_fraction,min_distance,
    median_distance,mean_distance} (memorisation in pixel space; within_rmse: closer than rmse_threshold),
    within_rmse_fraction.<class>; given inception_fn (e.g.
    mvcaug.judging.inception's), also fid_inception, kid_inception_mean, kid_inception_std in its feature
    space. Raises if a value is not finite."""
    # 1. features of both sets, once
    real_features = extract(feature_fn, real_pixels, batch_size)
    synthetic_features = extract(feature_fn, synthetic_pixels, batch_size)
    comparison = real_pixels if comparison_pixels is None else comparison_pixels
    comparison_features = real_features if comparison_pixels is None else extract(feature_fn, comparison, batch_size)
    # 2. the measures
    fidelity = label_fidelity(predict_fn, synthetic_pixels, synthetic_labels, classes, batch_size)
    distances = distribution_distances(comparison_features, synthetic_features, kid_subsets, kid_subset_size, seed)
    if inception_fn is not None:
        inception = distribution_distances(extract(inception_fn, comparison, batch_size),
                                           extract(inception_fn, synthetic_pixels, batch_size),
                                           kid_subsets, kid_subset_size, seed)
        distances.update({"fid_inception": inception["fid"], "kid_inception_mean": inception["kid_mean"],
                          "kid_inception_std": inception["kid_std"]})
    spread = {"synthetic": diversity(synthetic_features, synthetic_labels),
              "real": diversity(real_features, real_labels)}
    memorised = memorisation(synthetic_pixels, real_pixels, rmse_threshold, batch_size=batch_size)
    # 3. flatten
    report = {f"fidelity.{label}": value for label, value in fidelity.items()}
    report.update(distances)
    report.update({f"diversity.{kind}.{k}": v for kind, values in spread.items() for k, v in values.items()})
    report.update({
        "memorisation.within_rmse": float(memorised["within_threshold"]),
        "memorisation.within_rmse_fraction": memorised["within_threshold"] / len(synthetic_pixels),
        "memorisation.min_distance": memorised["min"],
        "memorisation.median_distance": memorised["median"],
        "memorisation.mean_distance": memorised["mean"],
    })
    labels = np.asarray(synthetic_labels)
    report.update({f"within_rmse_fraction.{label}":
                   float((memorised["distance"][labels == label] < memorised["threshold"]).mean())
                   for label in sorted(set(synthetic_labels))})
    # 4. a NaN would be written as invalid JSON and compare as nothing in `dvc metrics diff`
    bad = sorted(key for key, value in report.items() if not np.isfinite(value))
    if bad:
        raise ValueError(f"quality report: non-finite values for {bad}")
    log.info("quality: fidelity %.3f, FID %.3f, KID %.4f, %d within RMSE %g of a training image", fidelity["_all"],
             report["fid"], report["kid_mean"], memorised["within_threshold"], memorised["threshold"])
    return report
