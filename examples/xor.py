"""XOR: a problem no linear model solves; one hidden layer of tanh units does.

Run: PYTHONPATH=src python examples/xor.py
"""

from chainrule import nn, optim
from chainrule.data import load_dataset, train_val_test_split
from chainrule.spec import build_model
from chainrule.train import evaluate, fit


def main() -> None:
    data = load_dataset("xor", seed=0)
    train, _, test = train_val_test_split(data.x, data.y, test=0.25, seed=0)
    loss_fn = nn.CrossEntropyLoss()
    for spec in ("linear", "mlp:8"):
        model = build_model(spec, 2, 2, activation="tanh", seed=0)
        fit(model, loss_fn, optim.Adam(model.parameters(), lr=0.05), train, epochs=100, batch_size=32, quiet=True)
        print(f"{spec:8s} test accuracy {evaluate(model, loss_fn, test)['accuracy']:.3f}")


if __name__ == "__main__":
    main()
