"""The shipped MNIST classifier, evaluate_samples on real digits, timing and bad-input errors."""
import pytest
import torch

from course_lib.evaluate import (DEFAULT_CHECKPOINT, classifier_outputs, evaluate_samples, load_classifier,
                                 time_per_sample)


@pytest.fixture(scope="module")
def test_digits():
    try:
        from course_lib.data import load_dataset

        test = load_dataset("mnist", "test", download=False)
    except Exception as err:  # noqa: BLE001 - any reason the files are missing means: skip, saying why
        pytest.skip(f"genuine MNIST test IDX files unavailable ({err}); "
                    "run `python -m course_lib data --download` or set COURSE_DATA")
    return test.x[:1000], test.y[:1000]


@pytest.fixture(scope="module")
def real_digits():
    """1,000 genuine digits: the test set where present, else the (always available) training digits."""
    import warnings

    from course_lib.data import load_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            data = load_dataset("mnist", "test", download=False)
        except Exception:  # noqa: BLE001 - no test files: the offline training digits are real digits too
            data = load_dataset("mnist", "train")
    idx = torch.randperm(len(data.x), generator=torch.Generator().manual_seed(0))[:1000]
    return data.x[idx], data.y[idx]


def test_shipped_checkpoint_is_small_and_loads_on_cpu():
    assert DEFAULT_CHECKPOINT.is_file(), "run `python -m course_lib train-classifier`"
    assert DEFAULT_CHECKPOINT.stat().st_size < 3_000_000
    model = load_classifier(device="cpu")  # torch.load(..., map_location="cpu") inside
    assert next(model.parameters()).device.type == "cpu" and not model.training


def test_classifier_accuracy_on_first_1000_test_digits(test_digits):
    x, y = test_digits
    _, logits, assumed = classifier_outputs(x)
    assert assumed == "uint8"
    acc = (logits.argmax(1) == y).float().mean().item()
    assert acc >= 0.985, f"accuracy {acc:.4f} on the first 1,000 MNIST test digits"


@pytest.mark.slow
def test_evaluate_samples_responds_to_degradation(real_digits):
    x, y = real_digits
    real, same, same_y = x[:300], x[300:600], y[300:600]
    # the same real images in three ranges give the same features
    f_u8, _, _ = classifier_outputs(x[900:])
    f_unit, _, r_unit = classifier_outputs(x[900:].float() / 255)
    f_signed, _, r_signed = classifier_outputs(x[900:].float() / 127.5 - 1)
    assert (r_unit, r_signed) == ("[0,1]", "[-1,1]")
    assert torch.allclose(f_u8, f_unit, atol=1e-4) and torch.allclose(f_u8, f_signed, atol=1e-4)
    floor = evaluate_samples(same, real, kid_subsets=10, kid_subset_size=150)
    f_real = classifier_outputs(real)[0]
    again = evaluate_samples(same, real_features=f_real, kid_subsets=10, kid_subset_size=150)
    assert again["fid"] == pytest.approx(floor["fid"]) and again["recall"] == floor["recall"]
    g = torch.Generator().manual_seed(0)
    noisy = (same.float() / 255 + 0.5 * torch.randn(same.shape, generator=g)).clamp(0, 1)
    bad = evaluate_samples(noisy, real_features=f_real, kid_subsets=10, kid_subset_size=150, value_range="[0,1]")
    assert bad["fid"] > 5 * floor["fid"] and bad["kid"] > floor["kid"] + 5 * bad["kid_se"]
    assert floor["classes_covered"] == 10 and floor["precision"] > 0.6
    sevens = same[same_y == 7]
    collapsed = evaluate_samples(sevens, real_features=f_real, kid_subsets=10, kid_subset_size=len(sevens))
    assert collapsed["label_histogram"][7] >= 0.9 * len(sevens) and collapsed["classes_covered"] <= 2
    assert collapsed["recall"] < floor["recall"] / 2


def test_bad_inputs_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="NaN or inf"):
        classifier_outputs(torch.full((4, 1, 28, 28), float("nan")))
    with pytest.raises(ValueError, match="1 channel"):
        classifier_outputs(torch.rand(4, 3, 32, 32))
    with pytest.raises(ValueError, match="unsqueeze"):
        classifier_outputs(torch.rand(4, 28, 28))
    with pytest.raises(ValueError, match="value_range"):
        classifier_outputs(torch.rand(4, 1, 28, 28) * 255)
    with pytest.raises(ValueError, match="at least 4"):
        evaluate_samples(torch.rand(3, 1, 28, 28), torch.rand(50, 1, 28, 28))
    with pytest.raises(FileNotFoundError, match="train-classifier"):
        load_classifier(tmp_path / "missing.pt")


def test_time_per_sample_counts_network_evaluations():
    net = torch.nn.Linear(4, 4)

    def sample(n):  # a 5-step "sampler" that calls the network 5 times
        x = torch.randn(n, 4)
        for _ in range(5):
            x = net(x)
        return x

    out = time_per_sample(sample, 8, network=net, repeats=2)
    assert out["nfe"] == 5 and out["n"] == 8
    assert out["samples_per_s"] == pytest.approx(8 / out["seconds"])
    assert out["seconds_per_nfe"] == pytest.approx(out["seconds"] / 5)


@pytest.mark.slow
def test_train_save_load_round_trip(tmp_path):
    from course_lib.evaluate.classifier import augment, save_classifier, train_classifier

    g = torch.Generator().manual_seed(0)
    # two separable "classes": a bright left half vs a bright right half, plus noise
    y = torch.arange(32) % 2
    x = -torch.ones(32, 1, 28, 28)
    x[y == 0, :, :, :14] = 1
    x[y == 1, :, :, 14:] = 1
    x = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    model, history = train_classifier(x, y, epochs=3, batch_size=16, x_test=x, y_test=y, log=lambda *_: None)
    assert history["loss"][-1] < history["loss"][0] and history["test_acc"][-1] > 0.9
    save_classifier(model, tmp_path / "c.pt", {"note": "test"})
    loaded = load_classifier(tmp_path / "c.pt")
    assert torch.allclose(loaded(x[:8]), model(x[:8]), atol=1e-6)
    assert (tmp_path / "c.json").read_text().strip().startswith("{")
    # augmentation keeps the background at -1 and the value range
    out = augment(x[:4], g)
    assert out.shape == x[:4].shape and out.min() >= -1 - 1e-5 and out.max() <= 1 + 1e-5


@pytest.mark.needs_fashion_mnist
def test_fashion_classifier_accuracy_on_first_1000_test_images():
    from course_lib.data import load_dataset

    try:
        test = load_dataset("fashion_mnist", "test", download=False)
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"Fashion-MNIST files unavailable ({err}); install the Debian package dataset-fashion-mnist")
    _, logits, _ = classifier_outputs(test.x[:1000], dataset="fashion_mnist")
    acc = (logits.argmax(1) == test.y[:1000]).float().mean().item()
    assert acc >= 0.87, f"accuracy {acc:.4f} on the first 1,000 Fashion-MNIST test images"
