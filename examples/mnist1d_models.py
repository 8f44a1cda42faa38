"""MNIST-1D (Greydanus 2020): generated locally by the `mnist1d` package (pip install mnist1d), cached.

Trains logistic regression and an MLP on the dataset's default 4000/1000 split (see mnist1d/ for CNN and GRU).
Run: PYTHONPATH=src python examples/mnist1d_models.py
"""

from chainrule import nn, optim
from chainrule.data import Standardizer, load_dataset
from chainrule.spec import build_model
from chainrule.train import evaluate, fit


def main() -> None:
    data = load_dataset("mnist1d")
    scaler = Standardizer().fit(data.x)
    train, test = (scaler.transform(data.x), data.y), (scaler.transform(data.x_test), data.y_test)
    loss_fn = nn.CrossEntropyLoss()
    for spec, lr, epochs, paper in (("linear", 1e-3, 200, 0.32), ("mlp:256,256", 1e-2, 150, 0.68)):
        model = build_model(spec, 40, 10, seed=0)
        fit(model, loss_fn, optim.Adam(model.parameters(), lr=lr), train, epochs=epochs, batch_size=100, quiet=True)
        acc = evaluate(model, loss_fn, test)["accuracy"]
        print(f"{spec:12s} test accuracy {acc:.3f} (paper: {paper:.2f})")


if __name__ == "__main__":
    main()
