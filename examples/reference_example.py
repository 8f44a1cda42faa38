"""The reference example through the Python API: one input x=2, target y=0.5, two weights.

ŷ = w2 · sigmoid(w1 · x), loss = ½(y - ŷ)². Gradient descent with lr 0.5 drives the loss to ~0.
Run: PYTHONPATH=src python examples/reference_example.py
"""

import chainrule as cr
from chainrule import nn, optim
from chainrule.data import load_dataset
from chainrule.train import fit


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(cr.tensor([0.5]).data)
        self.w2 = nn.Parameter(cr.tensor([0.3]).data)

    def forward(self, x: cr.Tensor) -> cr.Tensor:
        return self.w2 * (self.w1 * x).sigmoid()


def main() -> None:
    data = load_dataset("reference")  # x = [[2.0]], y = [[0.5]]
    model = Tiny()
    loss_fn = nn.MSELoss(reduction="sum")  # (y - ŷ)², i.e. twice ½(y - ŷ)²
    history = fit(
        model,
        loss_fn,
        optim.SGD(model.parameters(), lr=0.5),
        (data.x, data.y),
        epochs=200,
        batch_size=None,
        target_loss=1e-8,
        quiet=True,
    )
    print(f"{history.message}: w1={model.w1.item():.4f} w2={model.w2.item():.4f} loss={history['train_loss'][-1]:.2e}")


if __name__ == "__main__":
    main()
