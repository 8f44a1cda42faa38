import numpy as np
import pytest
import torch

from chainrule.data import (
    DATASETS,
    DataLoader,
    Standardizer,
    Subset,
    TensorDataset,
    load_dataset,
    one_hot,
    random_split,
    train_val_test_split,
)
from chainrule.errors import ConfigError, DataError
from chainrule.random import Generator


def test_dataloader_batches_drop_last_full_batch():
    x, y = np.arange(10, dtype=np.float32).reshape(10, 1), np.arange(10)
    sizes = [len(b[0]) for b in DataLoader((x, y), batch_size=4)]
    assert sizes == [4, 4, 2]
    assert [len(b[0]) for b in DataLoader((x, y), batch_size=4, drop_last=True)] == [4, 4]
    ((bx, by),) = list(DataLoader(TensorDataset(x, y), batch_size=None))
    assert bx.shape == (10, 1) and by.data.tolist() == list(range(10))


def test_shuffle_seeded_and_state_restores_order():
    x = np.arange(20)
    a = DataLoader((x,), batch_size=5, shuffle=True, generator=Generator(3))
    b = DataLoader((x,), batch_size=5, shuffle=True, generator=Generator(3))
    first = [t[0].data.tolist() for t in a]
    assert first == [t[0].data.tolist() for t in b] and sorted(sum(first, [])) == list(range(20))
    state = a.get_state()
    nxt = [t[0].data.tolist() for t in a]
    a.set_state(state)
    assert [t[0].data.tolist() for t in a] == nxt != first


def test_random_split_and_train_val_test_split():
    parts = random_split((np.arange(10), np.arange(10)), [0.7, 0.3], generator=Generator(0))
    assert [len(p) for p in parts] == [7, 3]
    assert sorted(np.concatenate([p[np.arange(len(p))][0] for p in parts]).tolist()) == list(range(10))
    with pytest.raises(DataError):
        random_split((np.arange(10),), [3, 3])
    (xt, yt), (xv, yv), (xe, ye) = train_val_test_split(np.arange(100), np.arange(100), 0.1, 0.25, seed=1)
    assert (len(xt), len(xv), len(xe)) == (65, 10, 25)
    assert sorted(np.r_[xt, xv, xe].tolist()) == list(range(100))
    with pytest.raises(DataError):
        train_val_test_split(np.arange(4), np.arange(4), 0.5, 0.6)


def test_standardizer_fit_on_train_only():
    tr = np.array([[1.0, 5.0], [3.0, 5.0]])
    s = Standardizer().fit(tr)
    assert s.transform(tr).tolist() == [[-1, 0], [1, 0]]
    assert s.transform(np.array([[5.0, 6.0]])).tolist() == [[3, 1]]
    s2 = Standardizer.from_dict(s.to_dict())
    assert np.array_equal(s2.transform(tr), s.transform(tr))
    with pytest.raises(DataError, match="shape"):
        s.transform(np.ones((2, 3)))


def test_one_hot():
    assert one_hot(np.array([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    with pytest.raises(DataError):
        one_hot(np.array([3]), 3)


@pytest.mark.parametrize(
    "name", ["reference", "xor", "moons", "circles", "spirals", "sine", "digits", "iris", "breast-cancer"]
)
def test_builtin_datasets(name):
    b = load_dataset(name, seed=0).check()
    assert len(b.x) == len(b.y) and b.description
    if b.task == "classification":
        assert b.y.dtype == np.int64 and b.num_classes >= 2
    again = load_dataset(name, seed=0)
    assert np.array_equal(again.x, b.x)


def test_builtin_specifics():
    r = load_dataset("reference")
    assert r.x.tolist() == [[2.0]] and r.y.tolist() == [[0.5]]
    d = load_dataset("digits")
    assert d.x.shape == (1797, 64) and d.x.max() == 16 and d.num_classes == 10
    from sklearn.datasets import load_digits

    assert np.array_equal(d.x, load_digits().data) and np.array_equal(d.y, load_digits().target)
    assert not np.array_equal(load_dataset("moons", seed=1).x, load_dataset("moons", seed=2).x)
    assert len(load_dataset("spirals", n=30).x) == 30
    assert set(DATASETS) >= {"mnist1d", "iris", "breast-cancer"}
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        load_dataset("nope")


def test_mnist1d_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRULE_CACHE", str(tmp_path))
    state = np.random.get_state()[1].copy()
    b = load_dataset("mnist1d")
    assert b.x.shape == (4000, 40) and b.x_test.shape == (1000, 40) and b.num_classes == 10
    assert np.array_equal(np.random.get_state()[1], state)  # the global NumPy generator is left alone
    assert (tmp_path / "mnist1d.npz").exists() and not list(tmp_path.glob("*.pkl"))
    assert np.array_equal(load_dataset("mnist1d").x, b.x)


@pytest.mark.parametrize("batch_size", [None, 1, 4])
@pytest.mark.parametrize("shuffle", [False, True])
def test_empty_dataset_has_no_batches(batch_size, shuffle):
    """As torch unshuffled: 0 batches (batch_size=None raised ZeroDivisionError). torch also refuses shuffle=True
    (RandomSampler: 'num_samples=0'); chainrule gives 0 batches there too, and fit() says 'no samples'."""
    x, y = np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    loader = DataLoader((x, y), batch_size=batch_size, shuffle=shuffle)
    assert len(loader) == 0 and list(loader) == []
    tds = torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y))
    assert len(torch.utils.data.DataLoader(tds, batch_size=4)) == 0


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True])
def test_batch_size_must_be_a_positive_integer(batch_size):
    """torch refuses these too ('batch_size should be a positive integer value'); True was taken as 1."""
    x = np.zeros((3, 1), np.float32)
    with pytest.raises(ValueError, match="batch_size"):
        torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(x)), batch_size=batch_size)
    with pytest.raises(DataError, match=f"batch_size must be a positive integer or None, got {batch_size!r}"):
        DataLoader((x, x), batch_size=batch_size)


@pytest.mark.parametrize(
    ("n", "batch_size", "drop_last"), [(10, 3, False), (10, 3, True), (10, 20, False), (10, 20, True)]
)
def test_loader_len_and_batches_match_torch(n, batch_size, drop_last):
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    ours = [len(b[0]) for b in DataLoader((x, x), batch_size=batch_size, drop_last=drop_last)]
    tds = torch.utils.data.TensorDataset(torch.tensor(x))
    theirs = torch.utils.data.DataLoader(tds, batch_size=batch_size, drop_last=drop_last)
    assert ours == [len(b[0]) for b in theirs]
    assert len(DataLoader((x, x), batch_size=batch_size, drop_last=drop_last)) == len(theirs)


def test_datasets_and_splits_match_torch():
    """Mismatched lengths refused (torch: 'Size mismatch between tensors'); fractions give torch's counts; lengths
    that do not add up are refused (torch: ValueError); Subset indexing (int, negative, list) as torch."""
    tu = torch.utils.data
    with pytest.raises(AssertionError, match="Size mismatch"):
        tu.TensorDataset(torch.zeros(3), torch.zeros(4))
    with pytest.raises(DataError, match="array 1 has 4 samples, array 0 has 3"):
        TensorDataset(np.zeros(3), np.zeros(4))
    for n, lengths in [(10, [0.3, 0.3, 0.4]), (10, [0.33, 0.33, 0.34]), (7, [0.25] * 4), (10, [1.0]), (10, [4, 6])]:
        x = np.zeros((n, 1))
        theirs = [len(s) for s in tu.random_split(tu.TensorDataset(torch.tensor(x)), lengths)]
        assert [len(s) for s in random_split((x, x), lengths, generator=Generator(0))] == theirs
    for lengths in ([3, 3], [0.5, 0.3], [0.5, 5]):
        with pytest.raises(ValueError, match="Sum of input lengths"):
            tu.random_split(tu.TensorDataset(torch.zeros(10)), lengths)
        with pytest.raises(DataError, match="do not add up to the dataset's 10 samples"):
            random_split((np.zeros(10), np.zeros(10)), lengths)
    x, y = np.arange(10.0).reshape(10, 1), np.arange(10)
    ours = Subset(TensorDataset(x, y), [5, 2, 7])
    theirs = tu.Subset(tu.TensorDataset(torch.tensor(x), torch.tensor(y)), [5, 2, 7])
    assert len(ours) == len(theirs) == 3
    for i in (1, -1, [0, 2]):
        for a, b in zip(ours[i], theirs[i]):
            np.testing.assert_array_equal(a, b.numpy())
