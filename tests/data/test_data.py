"""Tests of the embedded datasets and of MNIST loading from tiny IDX files written here."""

from pathlib import Path

import pytest
import sklearn.datasets
import torch
import torchvision
from idx_files import write_split
from torch.utils.data import DataLoader

from pyroext.data import (
    RAW_FILES,
    BinarizedImages,
    load_diabetes,
    load_digits,
    load_faithful,
    load_mnist,
)

# Embedded tables


def test_diabetes_standardized() -> None:
    data = load_diabetes(dtype=torch.float64)
    assert data.x.shape == (442, 10) and data.y.shape == (442,)
    assert data.feature_names == ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
    assert data.target_name == "progression"
    torch.testing.assert_close(
        data.x.mean(0), torch.zeros(10, dtype=torch.float64), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        data.x.std(0, unbiased=False), torch.ones(10, dtype=torch.float64), atol=1e-12, rtol=0
    )
    assert abs(data.y.mean().item()) < 1e-12
    assert abs(data.y.std(unbiased=False).item() - 1) < 1e-12


def test_diabetes_float32_default() -> None:
    data = load_diabetes()
    assert data.x.dtype == data.y.dtype == torch.float32
    assert data.x.mean(0).abs().max().item() < 1e-6
    assert (data.x.std(0, unbiased=False) - 1).abs().max().item() < 1e-5


def test_diabetes_raw_matches_sklearn() -> None:
    data = load_diabetes(standardize=False, dtype=torch.float64)
    bunch = sklearn.datasets.load_diabetes(scaled=False)
    assert torch.equal(data.x, torch.from_numpy(bunch.data))
    assert torch.equal(data.y, torch.from_numpy(bunch.target))
    assert data.x[0, :4].tolist() == [59.0, 2.0, 32.1, 101.0]
    assert data.y[:3].tolist() == [151.0, 75.0, 141.0]


def test_digits() -> None:
    data = load_digits()
    assert data.x.shape == (1797, 64) and data.x.dtype == torch.float32
    assert data.x.min().item() == 0.0 and data.x.max().item() == 1.0
    assert data.y.dtype == torch.int64 and data.y.unique().tolist() == list(range(10))
    assert data.feature_names[:2] == ("pixel_0_0", "pixel_0_1")
    assert data.feature_names[-1] == "pixel_7_7" and len(data.feature_names) == 64
    raw = torch.from_numpy(sklearn.datasets.load_digits().data)
    assert torch.equal(load_digits(dtype=torch.float64).x * 16, raw)


def test_faithful() -> None:
    data = load_faithful(dtype=torch.float64)
    assert data.x.shape == (272, 2) and data.y is None and data.target_name is None
    assert data.feature_names == ("eruptions", "waiting")
    # R: colMeans(faithful)
    means = data.x.mean(0).tolist()
    assert means == pytest.approx([3.487783, 70.897059], abs=5e-7)
    assert data.x[0].tolist() == [3.6, 79.0]


def test_faithful_standardized() -> None:
    x = load_faithful(standardize=True, dtype=torch.float64).x
    assert x.mean(0).abs().max().item() < 1e-12
    assert (x.std(0, unbiased=False) - 1).abs().max().item() < 1e-12


# MNIST from IDX files written by the tests

N_TRAIN, N_TEST = 5, 3


def _images(n: int, offset: int) -> torch.Tensor:
    """Checkerboards of 0 and 255; image i has 28 grey levels in row 3 + i, starting 127, 128."""
    rows, cols = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    board = ((rows + cols) % 2 * 255).to(torch.uint8)
    images = board.repeat(n, 1, 1)
    for i in range(n):
        grey = torch.tensor([127, 128] + [1 + (9 * j + 3 * (i + offset)) % 253 for j in range(26)])
        images[i, 3 + i] = grey.to(torch.uint8)
    return images


@pytest.fixture
def mnist_root(tmp_path: Path) -> dict[str, object]:
    """Writes tiny MNIST and Fashion-MNIST folders under ``tmp_path``; returns their contents."""
    contents: dict[str, object] = {"root": tmp_path}
    for folder, shift in (("MNIST", 0), ("FashionMNIST", 4)):
        raw = tmp_path / folder / "raw"
        raw.mkdir(parents=True)
        train = (_images(N_TRAIN, shift), (torch.arange(N_TRAIN) + shift) % 10)
        test = (_images(N_TEST, shift + N_TRAIN), (torch.arange(N_TEST) * 3 + shift) % 10)
        write_split(raw, "train", *train)
        write_split(raw, "t10k", *test)
        contents[folder] = {"train": train, "test": test}
    return contents


@pytest.mark.parametrize("fashion", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_mnist_intensities_round_trip(mnist_root: dict, fashion: bool, train: bool) -> None:
    images, labels = mnist_root["FashionMNIST" if fashion else "MNIST"][
        "train" if train else "test"
    ]
    data = load_mnist(mnist_root["root"], train=train, binarize=None, fashion=fashion)
    assert len(data) == len(labels)
    x, y = data.tensors()
    assert x.shape == (len(labels), 784) and x.dtype == torch.float32
    assert torch.equal(y, labels)
    assert torch.equal(x, images.reshape(-1, 784).float() / 255)
    image, label = data[1]
    assert torch.equal(image, images[1].flatten().float() / 255) and label.item() == labels[1]


def test_mnist_accepts_str_root_and_collates(mnist_root: dict) -> None:
    data = load_mnist(str(mnist_root["root"]), binarize="static")
    x, y = next(iter(DataLoader(data, batch_size=4)))
    assert x.shape == (4, 784) and y.tolist() == [0, 1, 2, 3]


def test_static_binarization_thresholds_at_half(mnist_root: dict) -> None:
    images, _ = mnist_root["MNIST"]["train"]
    data = load_mnist(mnist_root["root"], binarize="static")
    x, _ = data.tensors()
    assert torch.equal(x, (images.reshape(-1, 784) >= 128).float())
    assert torch.equal(data[2][0], x[2]) and torch.equal(data[2][0], data[2][0])
    # Pixels 127 and 128 sit on either side of the 0.5 threshold.
    assert data[0][0][3 * 28 : 3 * 28 + 2].tolist() == [0.0, 1.0]


def test_dynamic_binarization_matches_intensity(mnist_root: dict) -> None:
    data = load_mnist(mnist_root["root"])
    p = load_mnist(mnist_root["root"], binarize=None)[0][0]
    first, second = data[0][0], data[0][0]
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(first, second)
    n = 4000
    mean = torch.stack([data[0][0] for _ in range(n)]).mean(0)
    grey = (p > 0) & (p < 1)
    assert grey.sum().item() == 28
    se = (p * (1 - p) / n).sqrt()
    assert ((mean - p).abs()[grey] < 4 * se[grey]).all()
    # Black and white pixels are deterministic.
    assert torch.equal(mean[~grey], p[~grey])


def test_dynamic_binarization_reproducible(mnist_root: dict) -> None:
    data = load_mnist(mnist_root["root"], train=False, fashion=True)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(123)
        return data[1][0], data.tensors()[0]

    (item_a, all_a), (item_b, all_b) = draw(), draw()
    assert torch.equal(item_a, item_b) and torch.equal(all_a, all_b)
    assert all_a.shape == (N_TEST, 784)
    assert set(all_a.unique().tolist()) <= {0.0, 1.0}


def test_invalid_binarize_checked_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="binarize='threshold'.*'dynamic', 'static', None"):
        load_mnist(tmp_path / "absent", binarize="threshold")
    with pytest.raises(ValueError, match="binarize"):
        BinarizedImages(torch.zeros(2, 28, 28, dtype=torch.uint8), torch.zeros(2), "soft")


def test_binarized_images_checks_inputs() -> None:
    with pytest.raises(ValueError, match="uint8"):
        BinarizedImages(torch.zeros(2, 28, 28), torch.zeros(2))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        BinarizedImages(torch.zeros(2, 28, 28, dtype=torch.uint8), torch.zeros(3))


@pytest.mark.parametrize("fashion", [False, True])
def test_missing_files_explain_where_and_how(tmp_path: Path, fashion: bool) -> None:
    folder = "FashionMNIST" if fashion else "MNIST"
    with pytest.raises(FileNotFoundError) as error:
        load_mnist(tmp_path, fashion=fashion)
    message = str(error.value)
    assert str(tmp_path / folder / "raw") in message
    assert "download=True" in message
    assert all(name in message for name in RAW_FILES)


def test_missing_test_split_reported_when_reading_train(tmp_path: Path) -> None:
    # torchvision needs all four files even for one split, so the check does too.
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_split(raw, "train", _images(N_TRAIN, 0), torch.arange(N_TRAIN))
    with pytest.raises(FileNotFoundError, match="missing: t10k-images-idx3-ubyte, t10k-labels"):
        load_mnist(tmp_path)


def test_download_flag_reaches_torchvision(mnist_root: dict, monkeypatch) -> None:
    # With every file present torchvision's download is a no-op; the network must not be used.
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", no_network)
    calls = []
    original = torchvision.datasets.MNIST.download
    monkeypatch.setattr(
        torchvision.datasets.MNIST, "download", lambda self: calls.append(1) or original(self)
    )
    data = load_mnist(mnist_root["root"], binarize=None, download=True)
    assert calls == [1] and len(data) == N_TRAIN
    load_mnist(mnist_root["root"], binarize=None)
    assert calls == [1]
