"""fastloss criteria as torch modules: ``fastloss.torch.wrap(criterion)``.

torch is optional: ``import fastloss`` never imports it, this module does. The wrapped module's
forward takes torch tensors in torch's argument order and returns a torch loss tensor whose
``.backward()`` uses fastloss's fused gradient:

* CPU tensors go to the kernels as NumPy views (no copy; a non-contiguous tensor is copied
  once, as any non-contiguous input), and the gradients come back as tensors sharing the
  kernel's buffers.
* With a scalar reduction the gradient is computed in the forward call (one fused pass, only
  when some input requires grad) and the backward scales it in place by the incoming
  gradient: no recomputation, no copy. With reduction='none' the incoming gradient is
  per element, and an input shared between elements (GaussianNLL's broadcast var, say) needs
  it inside the sum, so the backward runs the kernel once with ``grad_output``.
* CUDA tensors are handed to the criterion as they are, which sends them to the GPU backend
  where one is installed.
"""
import numpy as np
import torch

__all__ = ["wrap", "FastLoss"]


def _host(value):
    if isinstance(value, torch.Tensor) and not value.is_cuda:
        return value.detach().numpy()
    return value


def _tensor(array, like):
    if array is None or isinstance(array, torch.Tensor):
        return array
    return torch.from_numpy(np.asarray(array)).to(like.device)


class _Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx, criterion, positions, *inputs):
        arrays = [_host(x) for x in inputs]
        positions = [i for i in positions if i < len(inputs)]   # an optional input left out
        wanted = [ctx.needs_input_grad[2 + i] for i in positions]
        ctx.criterion, ctx.positions, ctx.wanted = criterion, positions, wanted
        like = next(x for x in inputs if isinstance(x, torch.Tensor))
        if not any(wanted):
            return _tensor(criterion.loss(*arrays), like)
        if criterion.reduction == "none":   # the backward needs grad_output inside the kernel
            ctx.arrays = arrays
            return _tensor(criterion.loss(*arrays), like)
        loss, grads = criterion(*arrays)
        ctx.grads = grads if isinstance(grads, tuple) else (grads,)
        ctx.like = like
        return _tensor(loss, like)

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.criterion.reduction == "none":
            _, grads = ctx.criterion(*ctx.arrays, grad_output=_host(grad_loss.contiguous()))
            grads = grads if isinstance(grads, tuple) else (grads,)
            grads = [_tensor(g, grad_loss) for g in grads]
        else:
            unit = not grad_loss.is_cuda and grad_loss.item() == 1.0   # loss.backward(): nothing to scale
            grads = [None if g is None else _tensor(g, ctx.like) if unit else _tensor(g, ctx.like).mul_(grad_loss)
                     for g in ctx.grads]
        out = [None] * len(ctx.needs_input_grad)
        for i, g, wanted in zip(ctx.positions, grads, ctx.wanted):
            out[2 + i] = g if wanted else None
        return tuple(out)


class FastLoss(torch.nn.Module):
    """A fastloss criterion as a torch module (see the module's docstring)."""

    def __init__(self, criterion):
        super().__init__()
        self.criterion = criterion
        self._positions = tuple(criterion.arguments.index(name) for name in criterion.differentiable
                                if name in criterion.arguments)

    def forward(self, *inputs):
        return _Function.apply(self.criterion, self._positions, *inputs)

    def extra_repr(self):
        return repr(self.criterion)


def wrap(criterion):
    """``criterion`` (a fastloss criterion instance) as a torch.nn.Module."""
    return FastLoss(criterion)
