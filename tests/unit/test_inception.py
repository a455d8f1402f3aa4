"""Inception-v3 features for FID/KID: the real torchvision network, random weights in a tmp safetensors file."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors.torch
import torch
import torchvision

from mvcaug.core.errors import UserError
from mvcaug.judging.inception import INCEPTION_DIM, InceptionWeightsError, inception_feature_fn
from mvcaug.io.scorer_models import load_inception
from mvcaug.judging.quality import distribution_distances, extract, frechet_distance



@pytest.fixture(autouse=True)
def two_threads():
    """Inception at 299 px is the one heavy model here: two threads for these tests, then back."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> str:
    """torchvision's inception_v3 with random weights, saved as the README tells users to save the real ones."""
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True)
    path = tmp_path_factory.mktemp("inception") / "inception_v3.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(path))
    return str(path)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """Eight 8x8 digits in [-1, 1], (8, 1, 8, 8): tiny, Inception resizes them to 299 px."""
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().images[:8] / 8.0 - 1.0, dtype=torch.float32)[:, None]


def test_inception_features_are_2048_d_and_fid_kid_behave(weights_file, digits):
    model = load_inception(weights_file)
    saved = safetensors.torch.load_file(weights_file)
    assert not model.training and isinstance(model.fc, torch.nn.Identity)
    assert torch.equal(model.Conv2d_1a_3x3.conv.weight, saved["Conv2d_1a_3x3.conv.weight"])
    feature_fn = inception_feature_fn(model, batch_size=4)
    features = extract(feature_fn, digits, batch_size=8)
    assert features.shape == (8, INCEPTION_DIM) and np.isfinite(features).all()
    # grayscale is repeated to three channels: the same image in RGB has the same features
    rgb = extract(feature_fn, digits[:1].expand(-1, 3, -1, -1), batch_size=8)
    np.testing.assert_allclose(rgb, features[:1], rtol=1e-4, atol=1e-6 * np.abs(features).max())
    first, second = features[:4], features[4:]
    scale = np.trace(np.cov(features, rowvar=False))
    assert abs(frechet_distance(first, first)) < 1e-9 * scale
    assert frechet_distance(first, second) > 1e-3 * scale
    same, different = (distribution_distances(first, other, kid_subsets=2) for other in (first, second))
    assert same["kid_mean"] < different["kid_mean"] and different["fid"] > same["fid"]


def test_a_missing_or_unfit_weights_file_is_a_user_error_naming_the_file_and_the_fix(tmp_path):
    fix = r"inception_v3\(weights='DEFAULT'\)"
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(InceptionWeightsError, match=f"absent.safetensors.*{fix}"):
        load_inception(missing)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00 not a safetensors file")
    with pytest.raises(InceptionWeightsError, match=f"corrupt.safetensors.*{fix}"):
        load_inception(corrupt)
    other_model = tmp_path / "resnet.safetensors"
    safetensors.torch.save_file({"conv1.weight": torch.zeros(1, 3, 7, 7)}, str(other_model))
    with pytest.raises(InceptionWeightsError, match=f"resnet.safetensors.*state dict.*{fix}"):
        load_inception(other_model)
    assert issubclass(InceptionWeightsError, UserError)
