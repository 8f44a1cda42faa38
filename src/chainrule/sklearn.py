"""scikit-learn estimators trained by chainrule: MLPClassifier, MLPRegressor, NeuralNetClassifier/Regressor.

They follow scikit-learn's conventions (plain `__init__`, `fit/predict/score/partial_fit`, fitted attributes
ending in "_") so they work in `Pipeline`, `GridSearchCV` and `cross_val_score`. `MLPClassifier` and
`MLPRegressor` take the arguments of their scikit-learn namesakes that chainrule implements, plus `dtype`: as
everywhere in chainrule, computation runs in float32 by default (about twice as fast as float64 on small models)
and in float64 with `dtype="float64"`; `dtype=None` computes in X's dtype (float32 or float64), as scikit-learn
does. Needs the `data` extra: `pip install "chainrule[data]"`.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np

try:
    import scipy.sparse as sp  # scikit-learn's own dependency
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError('chainrule.sklearn needs scikit-learn: pip install "chainrule[data]"') from e

from . import functional as F
from . import nn
from .errors import ConfigError, DataError, TrainingError
from .optim import SGD, Adam, AdamW, Optimizer
from .random import Generator, default_generator
from .tensor import Tensor, no_grad

__all__ = ["MLPClassifier", "MLPRegressor", "NeuralNetClassifier", "NeuralNetRegressor"]

# X as scikit-learn's MLP takes it: float64 or float32 (others become float64), dense or CSR/CSC (sparse X is
# densified one minibatch at a time in training, whole at prediction)
_X_CHECKS: dict[str, Any] = {"dtype": (np.float64, np.float32), "accept_sparse": ("csr", "csc")}
_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid, "identity": nn.Identity}


class _BaseNeuralNet(BaseEstimator):
    """Minibatch training loop shared by the four estimators (subclasses define the loss and targets)."""

    _is_classifier = False

    def __init__(
        self,
        module: Any = None,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate_init: float = 0.001,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: int | None = None,
        tol: float = 1e-4,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        verbose: bool = False,
        warm_start: bool = False,
        dtype: Any = "float32",
    ) -> None:
        self.module = module
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.verbose = verbose
        self.warm_start = warm_start
        self.dtype = dtype

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # -- pieces the subclasses define
    def _build_module(self, n_features: int, n_outputs: int, generator: Generator) -> nn.Module:
        module = self.module
        if module is None:
            raise ConfigError(f"{type(self).__name__}: module is required (a chainrule Module or a factory)")
        if isinstance(module, nn.Module):
            return copy.deepcopy(module)  # never train the instance held as a parameter
        if callable(module):
            # layers that draw from chainrule's default generator get a seed from random_state, so that
            # two fits with the same random_state start from the same weights
            saved = default_generator.get_state()
            default_generator.manual_seed(int(generator.np.integers(2**31)))
            try:
                out = module(n_features, n_outputs)
            finally:
                default_generator.set_state(saved)
            if not isinstance(out, nn.Module):
                raise ConfigError(
                    f"{type(self).__name__}: module factory returned {type(out).__name__}, not a chainrule Module"
                )
            return out
        raise ConfigError(f"{type(self).__name__}: module must be a chainrule Module or a factory, got {module!r}")

    def _loss(self, out: Tensor, y: np.ndarray) -> Tensor:
        raise NotImplementedError

    def _validation_score(self, X: np.ndarray, y: np.ndarray) -> float:
        raise NotImplementedError

    # -- the loop
    def _check_hyperparameters(self) -> None:
        name = type(self).__name__
        custom = isinstance(self.solver, type) and issubclass(self.solver, Optimizer)
        if not custom and self.solver not in ("adam", "adamw", "sgd"):
            raise ConfigError(
                f"{name}: solver must be 'adam', 'adamw', 'sgd' or a chainrule.optim.Optimizer class, "
                f"got {self.solver!r}"
            )
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter > 0):
            raise ConfigError(f"{name}: max_iter must be a positive integer, got {self.max_iter!r}")
        if self.learning_rate_init <= 0:
            raise ConfigError(f"{name}: learning_rate_init must be > 0, got {self.learning_rate_init!r}")
        if self.alpha < 0:
            raise ConfigError(f"{name}: alpha must be >= 0, got {self.alpha!r}")
        if self.tol < 0:
            raise ConfigError(f"{name}: tol must be >= 0, got {self.tol!r}")
        if not self.n_iter_no_change >= 1:  # an integer or inf, as in scikit-learn
            raise ConfigError(f"{name}: n_iter_no_change must be >= 1, got {self.n_iter_no_change!r}")
        if not 0 <= self.momentum <= 1:
            raise ConfigError(f"{name}: momentum must be in [0, 1], got {self.momentum!r}")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, (int, np.integer)) and self.batch_size > 0):
            raise ConfigError(f"{name}: batch_size must be 'auto' or a positive integer, got {self.batch_size!r}")
        if self.dtype is not None:
            try:
                dt = np.dtype(self.dtype)
            except TypeError:
                dt = None
            if dt not in (np.float32, np.float64):
                raise ConfigError(f"{name}: dtype must be 'float32', 'float64' or None, got {self.dtype!r}")
        if self.early_stopping and not 0 < self.validation_fraction < 1:
            raise ConfigError(f"{name}: validation_fraction must be in (0, 1), got {self.validation_fraction!r}")

    def _no_early_stopping_in_partial_fit(self) -> None:
        if self.early_stopping:  # scikit-learn's rule: one epoch has no held-out data to stop on
            raise ConfigError(f"{type(self).__name__}: partial_fit does not support early_stopping=True")

    def _make_optimizer(self) -> Any:
        lr = self.learning_rate_init
        self._flat = None
        if isinstance(self.solver, type):  # a chainrule optimizer class, with its own defaults besides lr
            return self.solver(list(self.model_.parameters()), lr=lr)
        # the built-in solvers update elementwise: they see one flat parameter whose pieces the layers view,
        # so a step is a few NumPy passes over one array instead of a few per layer
        params = [self._flatten_parameters()]
        if self.solver == "sgd":
            return SGD(params, lr=lr, momentum=self.momentum, nesterov=self.nesterovs_momentum and self.momentum > 0)
        cls = AdamW if self.solver == "adamw" else Adam
        return cls(params, lr=lr, betas=(self.beta_1, self.beta_2), eps=self.epsilon, weight_decay=0.0)

    def _initialize(self, X: np.ndarray, n_outputs: int) -> None:
        self._check_hyperparameters()
        self._rng = Generator(int(check_random_state(self.random_state).randint(2**31 - 1)))
        self.model_ = self._build_module(X.shape[1], n_outputs, self._rng).to(X.dtype)
        self._optimizer = self._make_optimizer()
        self.loss_curve_: list[float] = []
        self.n_iter_ = 0
        self.t_ = 0
        self._no_improvement = 0
        self._best_loss = np.inf
        self.best_loss_: float | None = None if self.early_stopping else np.inf  # as scikit-learn
        self.validation_scores_: list[float] | None = [] if self.early_stopping else None
        self.best_validation_score_: float | None = -np.inf if self.early_stopping else None
        self._best_state: dict[str, np.ndarray] | None = None

    def _flatten_parameters(self) -> Tensor:
        """One Parameter holding every parameter's values (weights first, so the L2 penalty is one slice),
        with the model's parameters turned into views of it. Called again when the views were lost
        (load_state_dict, copying, pickling): the optimizer keeps the same flat Parameter and its state."""
        wids = {id(w) for w in self._weights()}
        params = list(self.model_.parameters())
        ordered = [p for p in params if id(p) in wids] + [p for p in params if id(p) not in wids]
        n = sum(p.data.size for p in ordered)
        flat = getattr(self, "_flat", None)
        if flat is None or flat.data.size != n:
            flat = nn.Parameter(np.empty(n, dtype=self._param_dtype()))
        self._views, off = [], 0
        grad = np.zeros(n, dtype=flat.data.dtype)
        for p in ordered:
            k, shape = p.data.size, p.data.shape
            flat.data[off : off + k] = p.data.reshape(-1)
            p.data = flat.data[off : off + k].reshape(shape)
            self._views.append((p, grad[off : off + k].reshape(shape)))
            off += k
        self._n_weights = sum(p.data.size for p in ordered if id(p) in wids)
        self._flat_grad = grad
        self._l2 = (flat.data[: self._n_weights], grad[: self._n_weights], np.empty(self._n_weights, grad.dtype))
        self._flat = flat
        return flat

    def _param_dtype(self) -> np.dtype:
        return next(iter(self.model_.parameters())).data.dtype

    def _views_intact(self) -> bool:
        flat = self._flat.data
        return all(p.data.base is not None and np.shares_memory(p.data, flat) for p, _ in self._views)

    def _weights(self) -> list[Tensor]:
        # the L2 penalty covers weight matrices and kernels, not biases or norm scales (as in scikit-learn)
        return [p for name, p in self.model_.named_parameters() if name.endswith("weight") and p.ndim >= 2]

    def _epoch(self, X: np.ndarray, y: np.ndarray) -> float:
        """One pass over (X, y) in minibatches; returns the mean training loss (penalty included)."""
        n, sparse = X.shape[0], sp.issparse(X)
        if sparse:
            X = X.tocsr()  # rows gathered and sliced cheaply
        bs = min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)
        if self.shuffle:  # one gather per epoch; the minibatches are then contiguous slices
            order = self._rng.np.permutation(n)
            X, y = X[order], y[order]
        if getattr(self, "_optimizer", None) is None:  # dropped by pickling
            self._optimizer = self._make_optimizer()
        flat = getattr(self, "_flat", None)
        if flat is not None and not self._views_intact():
            self._flatten_parameters()
        self.model_.train()
        weights = self._weights() if self.alpha and flat is None else []
        model, optimizer, loss_fn, gather, alpha = (
            self.model_,
            self._optimizer,
            self._loss,
            self._gather_grads,
            self.alpha,
        )
        total = 0.0
        for start in range(0, n, bs):
            xb, yb = X[start : start + bs], y[start : start + bs]
            if sparse:
                xb = xb.toarray()
            m = xb.shape[0]
            loss = loss_fn(model(Tensor(xb)), yb)
            optimizer.zero_grad()
            loss.backward()
            value = float(loss.data)
            # the L2 penalty ½·alpha·Σ‖W‖²/batch enters through its gradient alpha·W/batch, outside the graph
            coef = alpha / m
            if flat is not None:
                value += gather(coef)
            for w in weights:
                value += 0.5 * coef * float(np.vdot(w.data, w.data))
                if w.grad is not None:
                    w.grad = Tensor(w.grad.data + coef * w.data)
            optimizer.step()
            total += value * m
        self.model_.eval()
        return total / n

    def _gather_grads(self, coef: float) -> float:
        """The layers' gradients into the flat gradient (plus the L2 term); returns the penalty's value."""
        views = self._views
        grads = [p.grad for p, _ in views]
        if any(g is None for g in grads):
            for (_, view), g in zip(views, grads):
                if g is None:
                    view.fill(0)
                else:
                    np.copyto(view, g.data)
        else:  # the views lie in order on the flat gradient: one call copies them all
            np.concatenate([g.data for g in grads], axis=None, out=self._flat_grad)
        for p, _ in views:
            p.grad = None
        penalty = 0.0
        if coef:
            w, gw, tmp = self._l2
            penalty = 0.5 * coef * float(np.dot(w, w))
            np.multiply(w, coef, out=tmp)
            gw += tmp
        self._flat.grad = Tensor(self._flat_grad)
        return penalty

    def _after_epoch(self, loss: float, X_val: np.ndarray | None, y_val: np.ndarray | None, n: int) -> bool:
        """Record one epoch; True when training should stop (no improvement for more than n_iter_no_change epochs)."""
        self.n_iter_ += 1
        self.t_ += n
        self.loss_ = loss
        self.loss_curve_.append(loss)
        if self.verbose:
            print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
        if not np.isfinite(loss):
            raise TrainingError(
                f"{type(self).__name__}: the training loss became {loss} at iteration {self.n_iter_}; "
                "lower learning_rate_init or scale the features"
            )
        # scikit-learn's rule: an epoch counts as no improvement unless it beats the best so far by more
        # than tol, and training stops once more than n_iter_no_change epochs in a row did not improve
        if self.early_stopping and X_val is not None:
            score = self._validation_score(X_val, y_val)
            self.validation_scores_.append(score)
            improved = not score < self.best_validation_score_ + self.tol
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_state = self.model_.state_dict()
        else:
            improved = not loss > self._best_loss - self.tol
            self._best_loss = min(self._best_loss, loss)
            self.best_loss_ = self._best_loss
        self._no_improvement = 0 if improved else self._no_improvement + 1
        return self._no_improvement > self.n_iter_no_change

    def _warm(self) -> bool:
        """True when fit continues from the fitted weights (warm_start and a fitted model)."""
        return bool(self.warm_start) and hasattr(self, "model_")

    def _fit(self, X: np.ndarray, y: np.ndarray, n_outputs: int, stratify: np.ndarray | None) -> Any:
        if self._warm():  # as scikit-learn: a fresh optimizer; n_iter_ counts this fit, the curves go on
            self._check_hyperparameters()
            self._optimizer = self._make_optimizer()
            self.n_iter_ = 0
        else:
            self._initialize(X, n_outputs)
        X_val = y_val = None
        if self.early_stopping:
            seed = int(self._rng.np.integers(2**31))
            try:
                X, X_val, y, y_val = train_test_split(
                    X, y, test_size=self.validation_fraction, random_state=seed, stratify=stratify
                )
            except ValueError:  # too few samples per class to stratify
                X, X_val, y, y_val = train_test_split(X, y, test_size=self.validation_fraction, random_state=seed)
        for _ in range(self.max_iter):
            if self._after_epoch(self._epoch(X, y), X_val, y_val, X.shape[0]):
                break
        else:
            warnings.warn(
                f"{type(self).__name__}: maximum iterations ({self.max_iter}) reached and the optimization "
                "hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        if self.early_stopping and self._best_state is not None:
            self.model_.load_state_dict(self._best_state)
        self._best_state = None
        return self

    def _compute_dtype(self, X: np.ndarray) -> np.dtype:
        """The dtype of the weights and of the computation: the `dtype` parameter, or X's (validated) dtype."""
        self._check_hyperparameters()
        return X.dtype if self.dtype is None else np.dtype(self.dtype)

    def _forward(self, X: np.ndarray) -> np.ndarray:
        """The module's output for X, computed in X's dtype: float32 weights are evaluated in float64 for a
        float64 X, so that a sample's prediction does not depend on the others in X (float32 products do,
        in the last bits, through the blocking of the matrix product)."""
        model = self.model_
        if sp.issparse(X):
            X = X.toarray()
        if X.dtype != self._dtype:
            model = copy.deepcopy(model).to(X.dtype)
        model.eval()
        with no_grad():
            return model(Tensor(X)).data

    def __getstate__(self) -> dict[str, Any]:
        # optimizer state is keyed by id(parameter), which does not survive pickling: drop it
        state = self.__dict__.copy()
        state.pop("_optimizer", None)
        state.pop("_flat", None)  # the layers' views of it do not survive pickling either
        state.pop("_views", None)
        state.pop("_l2", None)
        state.pop("_flat_grad", None)
        return state


class NeuralNetClassifier(ClassifierMixin, _BaseNeuralNet):
    """Classifier training a chainrule module with softmax cross-entropy.

    module: a chainrule Module mapping (n_samples, n_features) to (n_samples, n_classes) logits, or a factory
    `module(n_features, n_classes) -> Module` called at fit time. A multilabel y (2-d 0/1 indicator of shape
    (n_samples, n_labels)) trains the n_labels outputs as independent sigmoids (binary cross-entropy summed over
    labels), as scikit-learn's MLPClassifier: classes_ is then arange(n_labels), predict gives 0/1 rows.
    The other arguments are scikit-learn's MLPClassifier's; solver is 'adam', 'adamw', 'sgd' or any
    chainrule.optim.Optimizer class (built with lr=learning_rate_init); alpha is the L2 penalty on weight
    matrices. The learning rate stays constant (scikit-learn's learning_rate schedules and the 'lbfgs' solver are
    not implemented). dtype: the compute dtype, "float32" (default) or "float64"; None: X's dtype (float32 for
    float32 X, else float64).
    """

    _is_classifier = True
    _multilabel = False  # set by fit / the first partial_fit

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _loss(self, out: Tensor, y: np.ndarray) -> Tensor:
        if self._multilabel:  # y: (n, n_labels) 0/1 in the compute dtype
            return F.binary_cross_entropy_with_logits(out, y) * float(y.shape[1])
        if out.ndim == 2 and out.shape[1] == len(self.classes_):  # y holds valid class codes (from _encode)
            return F._fused_cross_entropy(out, y, "mean")
        return F.cross_entropy(out, y)

    def _validation_score(self, X: np.ndarray, y: np.ndarray) -> float:
        if self._multilabel:  # subset accuracy, as scikit-learn's score
            return float(np.mean(np.all((self._forward(X) > 0) == (y > 0.5), axis=1)))
        return float(np.mean(self._forward(X).argmax(axis=1) == y))

    def _check_y(self, X: Any, y: Any, reset: bool) -> tuple[Any, np.ndarray]:
        """Validated X and y: y (n_samples,) labels, or (n_samples, n_labels) for a multilabel indicator."""
        X, y = validate_data(self, X, y, **_X_CHECKS, multi_output=True, reset=reset)
        if sp.issparse(y):
            y = y.toarray()
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        return X, y

    def _encode(self, y: np.ndarray) -> np.ndarray:
        if self._multilabel or y.ndim == 2:
            if not (self._multilabel and y.ndim == 2 and y.shape[1] == len(self.classes_)):
                fitted = f"an indicator of {len(self.classes_)} labels" if self._multilabel else "1-d labels"
                raise DataError(f"{type(self).__name__}: y has shape {y.shape}, but was fitted on {fitted}")
            return y.astype(self._dtype)
        codes = np.searchsorted(self.classes_, y)
        codes = np.clip(codes, 0, len(self.classes_) - 1)
        if not np.all(self.classes_[codes] == y):
            unseen = np.setdiff1d(y, self.classes_)
            raise DataError(f"{type(self).__name__}: y contains labels not in classes_: {unseen[:5].tolist()}")
        return codes.astype(np.int64)

    def fit(self, X: Any, y: Any) -> NeuralNetClassifier:
        """Train for up to max_iter epochs, from scratch or (warm_start) from the fitted weights.
        X: (n_samples, n_features); y: (n_samples,) labels."""
        warm = self._warm()
        X, y = self._check_y(X, y, reset=not warm)
        multilabel = type_of_target(y) == "multilabel-indicator"
        classes = np.arange(y.shape[1]) if multilabel else np.unique(y)
        if warm and (multilabel != self._multilabel or not np.array_equal(classes, self.classes_)):
            raise DataError(
                f"{type(self).__name__}: warm_start needs y with the classes of the previous fit, "
                f"{self.classes_.tolist()}; y has {classes.tolist()}"
            )
        self.classes_, self._multilabel = classes, multilabel
        if not warm:
            self._dtype = self._compute_dtype(X)
        stratify = None if multilabel else y
        return self._fit(X.astype(self._dtype, copy=False), self._encode(y), len(classes), stratify=stratify)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> NeuralNetClassifier:
        """One epoch over (X, y). The first call needs `classes`, every label that will ever appear."""
        self._no_early_stopping_in_partial_fit()
        first = not hasattr(self, "model_")
        X, y = self._check_y(X, y, reset=first)
        if first:
            if classes is None:
                raise ConfigError(f"{type(self).__name__}: classes must be passed on the first call to partial_fit")
            self._multilabel = type_of_target(y) == "multilabel-indicator"
            self.classes_ = np.arange(y.shape[1]) if self._multilabel else np.unique(np.asarray(classes))
            self._dtype = self._compute_dtype(X)
            self._initialize(X.astype(self._dtype, copy=False), len(self.classes_))
        elif classes is not None and not np.array_equal(self.classes_, np.unique(np.asarray(classes))):
            raise ConfigError(f"{type(self).__name__}: classes={classes!r} differs from classes_ of the first call")
        X = X.astype(self._dtype, copy=False)
        self._after_epoch(self._epoch(X, self._encode(y)), None, None, X.shape[0])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in the order of classes_ (for a multilabel
        fit, each label's probability, the rows not summing to 1)."""
        check_is_fitted(self)
        X = validate_data(self, X, **_X_CHECKS, reset=False)
        z = self._forward(X)
        if self._multilabel:
            return np.exp(-np.logaddexp(0, -z))  # sigmoid, without overflow
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample, shape (n_samples,); (n_samples, n_labels) 0/1 if multilabel."""
        check_is_fitted(self)
        if self._multilabel:
            return (self.predict_proba(X) > 0.5).astype(np.int64)
        X = validate_data(self, X, **_X_CHECKS, reset=False)
        return self.classes_[self._forward(X).argmax(axis=1)]


class NeuralNetRegressor(RegressorMixin, _BaseNeuralNet):
    """Regressor training a chainrule module with the squared error (halved, as in scikit-learn).

    module: a chainrule Module mapping (n_samples, n_features) to (n_samples, n_targets), or a factory
    `module(n_features, n_targets) -> Module`. y may be (n_samples,) or (n_samples, n_targets).
    """

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _loss(self, out: Tensor, y: np.ndarray) -> Tensor:
        return F.mse_loss(out, Tensor(y)) * (0.5 * y.shape[1])  # ½ mean over samples of the summed squares

    def _validation_score(self, X: np.ndarray, y: np.ndarray) -> float:
        pred = self._forward(X)
        ss_res = ((y - pred) ** 2).sum()
        ss_tot = ((y - y.mean(axis=0)) ** 2).sum()
        return float(1 - ss_res / ss_tot) if ss_tot > 0 else 0.0

    def _targets(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        self._y_1d = y.ndim == 1
        return (y.reshape(-1, 1) if y.ndim == 1 else y).astype(X.dtype)

    def fit(self, X: Any, y: Any) -> NeuralNetRegressor:
        """Train for up to max_iter epochs, from scratch or (warm_start) from the fitted weights.
        X: (n_samples, n_features); y: (n_samples[, n_targets])."""
        warm = self._warm()
        X, y = validate_data(self, X, y, **_X_CHECKS, multi_output=True, y_numeric=True, reset=not warm)
        if not warm:
            self._dtype = self._compute_dtype(X)
        X = X.astype(self._dtype, copy=False)
        y = self._targets(X, y)
        return self._fit(X, y, y.shape[1], stratify=None)

    def partial_fit(self, X: Any, y: Any) -> NeuralNetRegressor:
        """One epoch over (X, y), starting from the current weights (or fresh ones on the first call)."""
        self._no_early_stopping_in_partial_fit()
        first = not hasattr(self, "model_")
        X, y = validate_data(self, X, y, **_X_CHECKS, multi_output=True, y_numeric=True, reset=first)
        if first:
            self._dtype = self._compute_dtype(X)
            X = X.astype(self._dtype, copy=False)
            y = self._targets(X, y)
            self._initialize(X, y.shape[1])
        else:
            X = X.astype(self._dtype, copy=False)
            y = (y.reshape(-1, 1) if y.ndim == 1 else y).astype(self._dtype)
        self._after_epoch(self._epoch(X, y), None, None, X.shape[0])
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions, shape (n_samples,) when fitted on a 1-d y, else (n_samples, n_targets)."""
        check_is_fitted(self)
        X = validate_data(self, X, **_X_CHECKS, reset=False)
        out = self._forward(X)
        return out.ravel() if self._y_1d else out


def _mlp(estimator: Any, n_features: int, n_outputs: int, generator: Generator) -> nn.Module:
    sizes = estimator.hidden_layer_sizes
    sizes = [sizes] if isinstance(sizes, (int, np.integer)) else list(sizes)
    if any(not isinstance(s, (int, np.integer)) or s <= 0 for s in sizes):
        raise ConfigError(f"{type(estimator).__name__}: hidden_layer_sizes must be positive integers, got {sizes!r}")
    if estimator.activation not in _ACTIVATIONS:
        raise ConfigError(
            f"{type(estimator).__name__}: activation must be one of {sorted(_ACTIVATIONS)}, "
            f"got {estimator.activation!r}"
        )
    layers: list[nn.Module] = []
    widths = [n_features, *sizes]
    factor = 2.0 if estimator.activation == "logistic" else 6.0
    for i, (a, b) in enumerate(zip(widths, [*sizes, n_outputs])):
        lin = nn.Linear(a, b, generator=generator)
        # Glorot-uniform weights and biases, as scikit-learn's MLP starts from
        bound = np.sqrt(factor / (a + b))
        lin.weight.data = generator.np.uniform(-bound, bound, (b, a)).astype(lin.weight.dtype)
        lin.bias.data = generator.np.uniform(-bound, bound, (b,)).astype(lin.bias.dtype)
        layers.append(lin)
        if i < len(sizes):
            layers.append(_ACTIVATIONS[estimator.activation]())
    return nn.Sequential(*layers)


_MLP_DOC = """
    hidden_layer_sizes: widths of the hidden layers; activation: 'relu', 'tanh', 'logistic' or 'identity'.
    Other arguments as in scikit-learn's namesake (solver 'adam', 'adamw', 'sgd' or a chainrule.optim.Optimizer
    class, with a constant learning rate learning_rate_init; no 'lbfgs', no learning_rate schedules;
    early_stopping holds out validation_fraction of the data and keeps the best weights; warm_start makes fit
    continue from the fitted weights with a fresh optimizer).
    dtype: the dtype of the weights and of the computation, "float32" (default) or "float64"; None: X's dtype
    (float32 for float32 X, else float64, as scikit-learn). Predictions are computed in X's floating dtype.
    Fitted: model_ (the chainrule module), n_iter_, loss_, loss_curve_, best_loss_, t_, n_features_in_ (and
    validation_scores_, best_validation_score_ with early_stopping).
"""


def _mlp_init(
    self: Any,
    hidden_layer_sizes: tuple[int, ...] = (100,),
    activation: str = "relu",
    *,
    solver: str = "adam",
    alpha: float = 0.0001,
    batch_size: int | str = "auto",
    learning_rate_init: float = 0.001,
    max_iter: int = 200,
    shuffle: bool = True,
    random_state: int | None = None,
    tol: float = 1e-4,
    momentum: float = 0.9,
    nesterovs_momentum: bool = True,
    early_stopping: bool = False,
    validation_fraction: float = 0.1,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    n_iter_no_change: int = 10,
    verbose: bool = False,
    warm_start: bool = False,
    dtype: Any = "float32",
) -> None:
    self.hidden_layer_sizes = hidden_layer_sizes
    self.activation = activation
    self.solver = solver
    self.alpha = alpha
    self.batch_size = batch_size
    self.learning_rate_init = learning_rate_init
    self.max_iter = max_iter
    self.shuffle = shuffle
    self.random_state = random_state
    self.tol = tol
    self.momentum = momentum
    self.nesterovs_momentum = nesterovs_momentum
    self.early_stopping = early_stopping
    self.validation_fraction = validation_fraction
    self.beta_1 = beta_1
    self.beta_2 = beta_2
    self.epsilon = epsilon
    self.n_iter_no_change = n_iter_no_change
    self.verbose = verbose
    self.warm_start = warm_start
    self.dtype = dtype


class MLPClassifier(NeuralNetClassifier):
    __doc__ = "Multi-layer perceptron classifier (Linear + activation layers, softmax cross-entropy).\n" + _MLP_DOC

    __init__ = _mlp_init

    def _build_module(self, n_features: int, n_outputs: int, generator: Generator) -> nn.Module:
        return _mlp(self, n_features, n_outputs, generator)


class MLPRegressor(NeuralNetRegressor):
    __doc__ = "Multi-layer perceptron regressor (Linear + activation layers, squared error).\n" + _MLP_DOC

    __init__ = _mlp_init

    def _build_module(self, n_features: int, n_outputs: int, generator: Generator) -> nn.Module:
        return _mlp(self, n_features, n_outputs, generator)
