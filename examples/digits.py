"""Digits (8x8 handwritten digits, bundled): an MLP trained with mini-batch Adam, early stopping on
validation loss, saved with its preprocessing and loaded back.

Run: PYTHONPATH=src python examples/digits.py
"""

import tempfile
from pathlib import Path

import numpy as np

from chainrule import nn, optim
from chainrule.data import Standardizer, load_dataset, train_val_test_split
from chainrule.serialize import load_with_metadata, save
from chainrule.spec import build_model
from chainrule.train import evaluate, fit, predict


def main() -> None:
    data = load_dataset("digits")
    (xtr, ytr), (xva, yva), (xte, yte) = train_val_test_split(data.x, data.y, val=0.1, test=0.25, seed=0)
    scaler = Standardizer().fit(xtr)  # fitted on the training split only
    xtr, xva, xte = scaler.transform(xtr), scaler.transform(xva), scaler.transform(xte)
    model = build_model("mlp:128", 64, 10, seed=0)
    loss_fn = nn.CrossEntropyLoss()
    history = fit(
        model,
        loss_fn,
        optim.Adam(model.parameters(), lr=1e-3),
        (xtr, ytr),
        val_data=(xva, yva),
        epochs=100,
        batch_size=32,
        early_stopping=5,
        quiet=True,
    )
    print(f"{history.message} (best epoch {history.best_epoch})")
    print(f"test accuracy {evaluate(model, loss_fn, (xte, yte))['accuracy']:.4f}")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "digits.safetensors"
        save(model, path, scaler=scaler.to_dict(), classes=data.classes)
        again, meta = load_with_metadata(path)
        assert np.array_equal(predict(again, xte), predict(model, xte))
        print(f"saved and reloaded {path.name}: {len(meta['spec']['layers'])} layers, identical predictions")


if __name__ == "__main__":
    main()
