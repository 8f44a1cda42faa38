"""Regression: fit y = sin(x) + noise with a small tanh MLP, stopping when the loss converges.

Run: PYTHONPATH=src python examples/sine_regression.py
"""

from chainrule import nn, optim
from chainrule.data import load_dataset, train_val_test_split
from chainrule.spec import build_model
from chainrule.train import evaluate, fit


def main() -> None:
    data = load_dataset("sine", seed=0)
    train, val, test = train_val_test_split(data.x, data.y, val=0.15, test=0.15, seed=0)
    model = build_model("mlp:32,32", 1, 1, activation="tanh", seed=0)
    loss_fn = nn.MSELoss()
    history = fit(
        model,
        loss_fn,
        optim.Adam(model.parameters(), lr=0.01),
        train,
        val_data=val,
        epochs=300,
        batch_size=32,
        tol=1e-4,
        patience=10,
        quiet=True,
    )
    m = evaluate(model, loss_fn, test)
    print(f"{history.message}; test R² {m['r2']:.4f}, MAE {m['mae']:.4f}")


if __name__ == "__main__":
    main()
