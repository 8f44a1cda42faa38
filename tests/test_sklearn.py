"""scikit-learn estimators: the estimator checks, model selection tools, and parity with sklearn's MLP."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from chainrule import nn, optim
from chainrule.errors import ConfigError, DataError, TrainingError
from chainrule.sklearn import MLPClassifier, MLPRegressor, NeuralNetClassifier, NeuralNetRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def small_net(n_in: int, n_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, 16), nn.Tanh(), nn.Linear(16, n_out))


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, ...]:
    X, y = load_digits(return_X_y=True)
    return tuple(train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y))


@pytest.mark.parametrize(
    "estimator",
    [
        MLPClassifier(max_iter=50),
        MLPRegressor(max_iter=50),
        NeuralNetClassifier(small_net, max_iter=50),
        NeuralNetRegressor(small_net, max_iter=200, learning_rate_init=0.01),
    ],
    ids=lambda e: type(e).__name__,
)
def test_passes_check_estimator(estimator) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])[:300]) for r in results if r["status"] == "failed"]
    assert len(results) > 40 and not failed


def test_pipeline_grid_search_and_cross_val_score(digits) -> None:
    X_train, _, y_train, _ = digits
    X, y = X_train[:400], y_train[:400]
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=20, batch_size=32, random_state=0)
    pipe = make_pipeline(StandardScaler(), clf)
    grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-1], "mlpclassifier__solver": ["adam", "sgd"]}, cv=2)
    grid.fit(X, y)
    assert set(grid.best_params_) == {"mlpclassifier__alpha", "mlpclassifier__solver"}
    assert grid.best_score_ > 0.8
    scores = cross_val_score(MLPRegressor(hidden_layer_sizes=(16,), max_iter=100, random_state=0), X, X[:, 20], cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.5)


def test_digits_accuracy_matches_sklearn(digits) -> None:
    X_train, X_test, y_train, y_test = digits
    kw = dict(hidden_layer_sizes=(64,), max_iter=30, batch_size=100, random_state=0, tol=0.0)
    ours = MLPClassifier(**kw).fit(X_train, y_train)
    theirs = SkMLPClassifier(**kw).fit(X_train, y_train)
    assert ours.n_iter_ == theirs.n_iter_ == 30 and len(ours.loss_curve_) == 30
    assert ours.score(X_test, y_test) >= theirs.score(X_test, y_test) - 0.01
    assert ours.score(X_test, y_test) > 0.94


def test_fitted_attributes_and_float32(digits) -> None:
    X_train, X_test, y_train, _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(20, 10), activation="logistic", max_iter=5, random_state=1)
    with pytest.warns(ConvergenceWarning):
        clf.fit(X_train.astype(np.float32), y_train)
    assert clf.n_features_in_ == 64 and list(clf.classes_) == list(range(10)) and clf.n_iter_ == 5
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert all(p.dtype == np.float32 for p in clf.model_.parameters())
    proba = clf.predict_proba(X_test[:7])
    assert proba.shape == (7, 10) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert clf.get_params()["hidden_layer_sizes"] == (20, 10)
    assert clf.set_params(max_iter=3).max_iter == 3


def test_dtype_parameter_float32_by_default(digits) -> None:
    X_train, X_test, y_train, y_test = digits
    kw = dict(hidden_layer_sizes=(16,), max_iter=3, random_state=0)
    ours = MLPClassifier(**kw).fit(X_train, y_train)  # float64 X, float32 weights and computation
    assert ours.get_params()["dtype"] == "float32"
    assert all(p.dtype == np.float32 for p in ours.model_.parameters())
    proba = ours.predict_proba(X_test)  # evaluated in X's dtype, as scikit-learn returns it
    assert proba.dtype == np.float64 and np.allclose(proba.sum(axis=1), 1, atol=1e-12)
    double = MLPClassifier(dtype="float64", **kw).fit(X_train, y_train)
    assert all(p.dtype == np.float64 for p in double.model_.parameters())
    np.testing.assert_allclose(double.loss_curve_, ours.loss_curve_, rtol=1e-4)  # same seeds, same training
    assert abs(double.score(X_test, y_test) - ours.score(X_test, y_test)) <= 0.01
    as_x = MLPRegressor(dtype=None, **kw).fit(X_train.astype(np.float32), y_train.astype(float))
    assert all(p.dtype == np.float32 for p in as_x.model_.parameters())
    as_x = MLPRegressor(dtype=None, **kw).fit(X_train, y_train.astype(float))
    assert all(p.dtype == np.float64 for p in as_x.model_.parameters())
    assert as_x.predict(X_test).dtype == np.float64
    with pytest.raises(ConfigError, match="dtype"):
        MLPClassifier(dtype="int32").fit(X_train[:50], y_train[:50])


def test_early_stopping_keeps_best_validation_weights(digits) -> None:
    X_train, _, y_train, _ = digits
    clf = MLPClassifier(
        hidden_layer_sizes=(32,), early_stopping=True, validation_fraction=0.2, n_iter_no_change=3, max_iter=200
    )
    clf.set_params(random_state=0, learning_rate_init=0.01).fit(X_train, y_train)
    assert clf.n_iter_ < 200 and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_) > 0.9


def test_partial_fit_and_pickle(digits) -> None:
    X_train, X_test, y_train, y_test = digits
    clf = MLPClassifier(hidden_layer_sizes=(32,), learning_rate_init=0.01, random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X_train[:50], y_train[:50])
    clf.partial_fit(X_train[:50], y_train[:50], classes=np.arange(10))
    clf = pickle.loads(pickle.dumps(clf))
    for _ in range(10):
        clf.partial_fit(X_train, y_train)
    assert clf.n_iter_ == 11 and clf.score(X_test, y_test) > 0.9

    reg = MLPRegressor(hidden_layer_sizes=(8,), random_state=0)
    X, y = make_regression(60, 3, n_targets=2, random_state=0)
    for _ in range(3):
        reg.partial_fit(X, y)
    assert reg.predict(X).shape == (60, 2) and len(reg.loss_curve_) == 3


def test_module_instance_is_not_trained_in_place() -> None:
    X, y = make_regression(80, 4, random_state=0)
    net = small_net(4, 1)
    before = {k: v.copy() for k, v in net.state_dict().items()}
    reg = NeuralNetRegressor(net, max_iter=20, random_state=0).fit(X, y)
    assert reg.model_ is not net and reg.predict(X).shape == (80,)
    assert all(np.array_equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="solver"):
        NeuralNetRegressor(net, solver="lbfgs").fit(X, y)
    reg = NeuralNetRegressor(net, solver=optim.AdamW, learning_rate_init=0.01, max_iter=30, random_state=0).fit(X, y)
    assert isinstance(reg._optimizer, optim.AdamW) and reg.loss_curve_[-1] < reg.loss_curve_[0]


def test_errors_are_chainrule_errors_and_value_errors() -> None:
    X, y = make_regression(40, 3, random_state=0)
    with pytest.raises(ConfigError, match="hidden_layer_sizes"):
        MLPRegressor(hidden_layer_sizes=(4, 0)).fit(X, y)
    with pytest.raises(ValueError, match="max_iter"):
        MLPRegressor(max_iter=0).fit(X, y)
    with pytest.raises(TrainingError, match="loss became"), np.errstate(all="ignore"):
        MLPRegressor(learning_rate_init=1e6, solver="sgd", max_iter=50).fit(X * 1e3, y * 1e3)
    clf = MLPClassifier(max_iter=2).fit(X, (y > 0).astype(int))
    with pytest.raises(DataError, match="not in classes_"):
        clf.partial_fit(X, np.full(40, 5))


@pytest.mark.parametrize("solver, cls", [("adam", optim.Adam), ("sgd", optim.SGD)])
def test_flat_parameter_update_equals_per_parameter_update(digits, solver, cls) -> None:
    """The built-in solvers step one flat parameter that the layers view: the same numbers as stepping each layer."""
    X_train, _, y_train, _ = digits
    X, y = X_train[:300], y_train[:300]
    kw = dict(hidden_layer_sizes=(12, 7), alpha=0.01, batch_size=64, max_iter=4, random_state=3, dtype="float64")
    flat = MLPClassifier(solver=solver, momentum=0.0 if solver == "sgd" else 0.9, **kw).fit(X, y)
    per = MLPClassifier(solver=cls, **kw).fit(X, y)  # an optimizer class: one state per layer
    assert flat._flat is not None and getattr(per, "_flat", None) is None
    for (k, a), (_, b) in zip(flat.model_.state_dict().items(), per.model_.state_dict().items()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=k)
    np.testing.assert_allclose(flat.loss_curve_, per.loss_curve_, rtol=1e-12)


def test_flat_parameters_survive_copies_and_state_loading(digits) -> None:
    import copy

    X_train, _, y_train, _ = digits
    X, y = X_train[:200], y_train[:200]
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, early_stopping=True, random_state=0).fit(X, y)
    # early stopping loaded the best weights (new arrays): the next partial_fit must still move the layers
    est.set_params(early_stopping=False)  # partial_fit refuses it, as scikit-learn's
    for clone in (est, copy.deepcopy(est), pickle.loads(pickle.dumps(est))):
        before = [p.data.copy() for p in clone.model_.parameters()]
        clone.partial_fit(X, y)
        assert all(not np.array_equal(b, p.data) for b, p in zip(before, clone.model_.parameters()))
        assert clone._views_intact()
    w = est.model_[0].weight.data
    assert np.shares_memory(w, est._flat.data)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_stopping_rule_counts_epochs_as_sklearn(digits, early_stopping) -> None:
    """Training stops once MORE than n_iter_no_change epochs in a row failed to beat the best by tol."""
    X_train, _, y_train, _ = digits
    X, y = X_train[:300], y_train[:300]
    for tol, n_iter_no_change in ((10.0, 3), (0.0, 1000)):
        kw = dict(hidden_layer_sizes=(8,), max_iter=12, tol=tol, n_iter_no_change=n_iter_no_change, random_state=0)
        kw.update(early_stopping=early_stopping, validation_fraction=0.2)
        ours, theirs = MLPClassifier(**kw).fit(X, y), SkMLPClassifier(**kw).fit(X, y)
        assert ours.n_iter_ == theirs.n_iter_ == (5 if tol else 12)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_loss_attributes_as_sklearn(digits, early_stopping) -> None:
    """loss_ is the last epoch's training loss; best_loss_ is None under early stopping (the validation score rules)."""
    X_train, _, y_train, _ = digits
    kw = dict(hidden_layer_sizes=(8,), max_iter=3, early_stopping=early_stopping, random_state=0)
    ours, theirs = MLPClassifier(**kw).fit(X_train, y_train), SkMLPClassifier(**kw).fit(X_train, y_train)
    for est in (ours, theirs):
        assert est.loss_ == est.loss_curve_[-1]
        assert (est.best_loss_ is None) if early_stopping else est.best_loss_ == min(est.loss_curve_)
    reg = MLPRegressor(hidden_layer_sizes=(4,), random_state=0).partial_fit(X_train, X_train[:, 20])
    assert reg.loss_ == reg.loss_curve_[-1]


def test_sparse_X_as_dense(digits) -> None:
    """CSR and CSC X are accepted (as scikit-learn's MLP does) and train and predict as the dense X."""
    import scipy.sparse as sp

    X_train, X_test, y_train, _ = digits
    X, y = X_train[:300], y_train[:300]
    kw = dict(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    dense = MLPClassifier(**kw).fit(X, y)
    for fmt in (sp.csr_matrix, sp.csc_matrix):
        clf = MLPClassifier(**kw).fit(fmt(X), y)
        np.testing.assert_array_equal(clf.loss_curve_, dense.loss_curve_)
        np.testing.assert_allclose(clf.predict_proba(fmt(X_test)), dense.predict_proba(X_test), rtol=1e-12)
    clf = MLPClassifier(early_stopping=True, **kw).fit(sp.csr_matrix(X), y)
    assert clf.set_params(early_stopping=False).partial_fit(sp.csr_matrix(X), y).n_iter_ == 4
    reg = MLPRegressor(**kw).fit(sp.csr_matrix(X), X[:, 20])
    assert reg.partial_fit(sp.csc_matrix(X), X[:, 20]).predict(sp.csr_matrix(X_test)).shape == (len(X_test),)


def test_warm_start_continues_training_as_sklearn(digits) -> None:
    """warm_start=True: fit continues from the fitted weights (n_iter_ counts this fit, loss_curve_ grows, t_
    accumulates); the classes must stay those of the first fit."""
    X_train, _, y_train, _ = digits
    X, y = X_train[:300], y_train[:300]
    kw = dict(hidden_layer_sizes=(8,), max_iter=3, tol=0.0, warm_start=True, random_state=0)
    ours, theirs = MLPClassifier(**kw), SkMLPClassifier(**kw)
    for est in (ours, theirs):
        est.fit(X, y)
        first = list(est.loss_curve_)
        est.fit(X, y)
        assert est.n_iter_ == 3 and len(est.loss_curve_) == 6 and est.t_ == 6 * len(X)
        assert est.loss_curve_[:3] == first and est.loss_curve_[3] < first[0]  # continued, not restarted
        with pytest.raises(ValueError, match="warm_start"):
            est.fit(X[y < 5], y[y < 5])
    cold = MLPClassifier(**{**kw, "warm_start": False}).fit(X, y)
    assert len(cold.fit(X, y).loss_curve_) == 3
    reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, warm_start=True, random_state=0)
    assert len(reg.fit(X, X[:, 20]).fit(X, X[:, 20]).loss_curve_) == 4


def test_multilabel_indicator_y_as_sklearn() -> None:
    """A 2-d 0/1 y trains one sigmoid output per label (binary cross-entropy), as scikit-learn's MLPClassifier:
    classes_ = arange(n_labels), predict gives (n, n_labels) 0/1, predict_proba independent label probabilities."""
    from sklearn.datasets import make_multilabel_classification

    X, Y = make_multilabel_classification(300, 10, n_classes=4, random_state=0)
    X = X / X.max()
    kw = dict(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.01, random_state=0)
    ours, theirs = MLPClassifier(**kw).fit(X, Y), SkMLPClassifier(**kw).fit(X, Y)
    for est in (ours, theirs):
        np.testing.assert_array_equal(est.classes_, np.arange(4))
        pred, proba = est.predict(X[:7]), est.predict_proba(X[:7])
        assert pred.shape == proba.shape == (7, 4) and set(np.unique(pred)) <= {0, 1}
        np.testing.assert_array_equal(pred, (proba > 0.5).astype(pred.dtype))
    assert np.issubdtype(ours.predict(X).dtype, np.integer)
    assert abs(ours.loss_curve_[0] - theirs.loss_curve_[0]) < 0.2  # both ≈ 4·log 2: the loss sums the labels
    assert abs(ours.loss_ - theirs.loss_) < 0.2
    assert ours.score(X, Y) >= theirs.score(X, Y) - 0.1 and ours.score(X, Y) > 0.35  # subset accuracy
    es = MLPClassifier(early_stopping=True, **kw).fit(X, Y)
    assert es.best_validation_score_ == max(es.validation_scores_) > 0.1  # chance: about 1/16
    clf = MLPClassifier(**kw).partial_fit(X, Y, classes=np.arange(4)).partial_fit(X, Y)
    assert clf.predict(X).shape == (300, 4) and clf.loss_curve_[1] < clf.loss_curve_[0]
    with pytest.raises(ValueError, match="labels"):
        clf.partial_fit(X, Y[:, :3])


@pytest.mark.parametrize(
    "param, value", [("momentum", 1.5), ("momentum", -0.1), ("n_iter_no_change", 0), ("tol", -1.0)]
)
def test_out_of_range_hyperparameters_are_refused_as_sklearn(param, value) -> None:
    X, y = make_regression(40, 3, random_state=0)
    with pytest.raises(ValueError, match=param):
        SkMLPClassifier(**{param: value}).fit(X, y > 0)
    with pytest.raises(ConfigError, match=param):
        MLPClassifier(solver="sgd", max_iter=2, **{param: value}).fit(X, y > 0)


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_partial_fit_refuses_early_stopping_as_sklearn(name: str) -> None:
    """scikit-learn raises 'partial_fit does not support early_stopping=True'; it was silently ignored here."""
    import sklearn.neural_network as skn

    x = np.random.default_rng(0).normal(size=(20, 3))
    y = np.arange(20) % 2
    kw = {"classes": [0, 1]} if name == "MLPClassifier" else {}
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        getattr(skn, name)(early_stopping=True).partial_fit(x, y, **kw)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}[name](early_stopping=True).partial_fit(
            x, y, **kw
        )
