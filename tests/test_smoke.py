import chainrule as cr


def test_reference_example_gradients() -> None:
    x = cr.tensor(2.0, dtype=cr.float64)
    w1 = cr.tensor(0.5, dtype=cr.float64, requires_grad=True)
    w2 = cr.tensor(0.3, dtype=cr.float64, requires_grad=True)
    loss = 0.5 * (0.5 - w2 * (w1 * x).sigmoid()) ** 2
    loss.backward()
    assert w1.grad is not None and w2.grad is not None
    assert abs(w1.grad.item() - (-0.03311130869014582)) < 1e-15
