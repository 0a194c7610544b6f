"""The feature classifier: learns real MNIST, feature shapes, whitened projection, checkpoint round trip."""

import json

import pytest
import torch

from ldcodec.data import load_split, to_tensor
from ldcodec.errors import LdcodecError
from ldcodec.metrics.features import (
    ClassifierConfig,
    FeatureClassifier,
    accuracy,
    augment_flip_crop,
    feature_views,
    features,
    load_classifier,
    save_classifier,
    train_classifier,
)


@pytest.fixture(scope="module")
def mnist():
    train_x, train_y = load_split("mnist", "train")  # the built-in sample of real MNIST
    test_x, test_y = load_split("mnist", "test")
    return to_tensor(train_x), torch.from_numpy(train_y), to_tensor(test_x), torch.from_numpy(test_y)


@pytest.fixture(scope="module")
def trained(mnist):
    x, y, _, _ = mnist
    return train_classifier(
        x, y, epochs=2, batch_size=64, config=ClassifierConfig(in_channels=1, width=8), max_steps=120, progress=False
    )


def test_a_hundred_steps_on_real_mnist_beat_chance_by_far(trained, mnist):
    _, _, test_x, test_y = mnist
    assert accuracy(trained, test_x, test_y) > 0.6  # chance is 0.1


def test_feature_shapes_and_whitened_projection(trained, mnist):
    x = mnist[0][:3000]
    full, low = features(trained, x), features(trained, x, projected=True)
    assert full.shape == (3000, 64) and low.shape == (3000, 8)
    assert full.dtype == torch.float32 and (full >= 0).all()  # ReLU features
    cov = torch.cov(low.double().T)  # fitted on these images' superset: unit covariance
    assert torch.allclose(cov, torch.eye(8, dtype=torch.float64), atol=0.15)


def test_one_pass_views_equal_the_separate_passes(trained, mnist):
    _, _, test_x, test_y = mnist
    views = feature_views(trained, test_x, batch_size=256)
    assert torch.equal(views["full"], features(trained, test_x))
    assert torch.allclose(views["low"], features(trained, test_x, projected=True), atol=1e-6)
    assert float((views["predicted"] == test_y).double().mean()) == accuracy(trained, test_x, test_y)


def test_checkpoint_round_trip(trained, mnist, tmp_path):
    x = mnist[2][:50]
    path = save_classifier(trained, tmp_path / "clf", metadata={"dataset": "mnist"})
    assert path.name == "clf.safetensors"
    saved = json.loads((tmp_path / "clf.json").read_text())
    assert saved["config"]["width"] == 8 and saved["metadata"] == {"dataset": "mnist"}
    loaded = load_classifier(path)
    assert torch.equal(features(loaded, x, projected=True), features(trained, x, projected=True))
    with pytest.raises(LdcodecError, match="ldcodec train-classifier --dataset mnist"):
        load_classifier(tmp_path / "missing.safetensors")


def test_cifar_shapes_and_unfitted_projection():
    model = FeatureClassifier(ClassifierConfig(in_channels=3, width=4))
    x = torch.rand(5, 3, 32, 32)
    assert model(x).shape == (5, 10) and features(model, x).shape == (5, 64)
    with pytest.raises(LdcodecError, match="fit_projection"):
        features(model, x, projected=True)


def test_augmentation_is_a_flip_and_a_shifted_crop():
    x = torch.rand(6, 3, 8, 8)
    out = augment_flip_crop(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    for image, augmented in zip(x, out):
        candidates = [
            torch.nn.functional.pad(view, (2, 2, 2, 2))[:, dy : dy + 8, dx : dx + 8]
            for view in (image, image.flip(-1))
            for dy in range(5)
            for dx in range(5)
        ]
        assert any(torch.equal(augmented, c) for c in candidates)
