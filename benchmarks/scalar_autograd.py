"""A micrograd-style scalar autograd (plain Python floats), the scalar-autograd peer of W1.

Written for these benchmarks: `pip install micrograd` gives a Value without exp/sigmoid, which
the reference example needs.
"""

from __future__ import annotations

import math


class Value:
    __slots__ = ("data", "grad", "_prev", "_backward")

    def __init__(self, data: float, prev: tuple = (), backward=None) -> None:
        self.data = data
        self.grad = 0.0
        self._prev = prev
        self._backward = backward

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other))

        def backward():
            self.grad += out.grad
            other.grad += out.grad

        out._backward = backward
        return out

    __radd__ = __add__

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other))

        def backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = backward
        return out

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other if isinstance(other, Value) else -other)

    def __rsub__(self, other):
        return (-self) + other

    def __pow__(self, k: float):
        out = Value(self.data**k, (self,))

        def backward():
            self.grad += k * self.data ** (k - 1) * out.grad

        out._backward = backward
        return out

    def sigmoid(self):
        s = 1.0 / (1.0 + math.exp(-self.data))
        out = Value(s, (self,))

        def backward():
            self.grad += s * (1.0 - s) * out.grad

        out._backward = backward
        return out

    def backward(self) -> None:
        order, seen = [], set()

        def visit(v):
            if id(v) not in seen:
                seen.add(id(v))
                for p in v._prev:
                    visit(p)
                order.append(v)

        visit(self)
        self.grad = 1.0
        for v in reversed(order):
            if v._backward is not None:
                v._backward()
