"""fastloss criteria as JAX functions: ``fastloss.jax.wrap(criterion)``.

JAX is optional: ``import fastloss`` never imports it, this module does. The wrapped function
takes JAX (or NumPy) arrays in torch's argument order and returns the loss. It has a
``jax.custom_vjp``: the forward and the gradient are computed by fastloss on the host through
``jax.pure_callback``, so it works under ``jax.jit`` and ``jax.grad`` (and ``jax.vmap``, one
call per mapped element). With a scalar reduction the differentiated forward computes loss and
gradient in one fused call and the backward only scales the gradient; with reduction='none'
the backward makes one more call with the incoming gradient as ``grad_output``. Float64
needs JAX's x64 mode, as for any JAX code.
"""
import jax
import numpy as np

__all__ = ["wrap"]


def wrap(criterion):
    """``criterion`` (a fastloss criterion instance) as a differentiable JAX function."""
    scalar = criterion.reduction != "none"

    def present(arrays):
        """(position of each differentiable input that was given, its index in the gradients)."""
        return [(criterion.arguments.index(name), k) for k, name in enumerate(criterion.differentiable)
                if criterion.arguments.index(name) < len(arrays)]

    def loss_shape(arrays):
        dtype = arrays[0].dtype
        if scalar:
            return jax.ShapeDtypeStruct((), dtype)
        # 'none': the loss's shape, from a call on zeros of the same shapes (no data needed)
        probe = criterion.loss(*[np.zeros(a.shape, a.dtype) for a in arrays])
        return jax.ShapeDtypeStruct(np.shape(probe), dtype)

    def grad_shapes(arrays):
        return tuple(jax.ShapeDtypeStruct(arrays[i].shape, arrays[i].dtype) for i, _ in present(arrays))

    def host_loss(*arrays):
        return np.asarray(criterion.loss(*arrays))

    def host_gradients(grad_output, *arrays):
        loss, grads = criterion(*arrays, grad_output=None if grad_output is None else np.asarray(grad_output))
        grads = grads if isinstance(grads, tuple) else (grads,)
        out = tuple(grads[k] if grads[k] is not None else np.zeros(arrays[i].shape, arrays[i].dtype)
                    for i, k in present(arrays))
        return (np.asarray(loss),) + out

    def call(callback, shapes, *args):
        return jax.pure_callback(callback, shapes, *args, vmap_method="sequential")

    @jax.custom_vjp
    def loss(*arrays):
        return call(host_loss, loss_shape(arrays), *arrays)

    def forward(*arrays):
        if not scalar:
            return loss(*arrays), (None, arrays)
        out = call(lambda *a: host_gradients(None, *a), (loss_shape(arrays),) + grad_shapes(arrays), *arrays)
        return out[0], (out[1:], arrays)

    def backward(residual, g):
        grads, arrays = residual
        if grads is None:
            grads = call(lambda go, *a: host_gradients(go, *a)[1:], grad_shapes(arrays), g, *arrays)
        else:
            grads = [gr * g.astype(gr.dtype) for gr in grads]
        cotangents = [None] * len(arrays)
        for (i, _), gr in zip(present(arrays), grads):
            cotangents[i] = gr
        return tuple(cotangents)

    loss.defvjp(forward, backward)
    return loss
