"""Every criterion as functions: ``name(*arrays, **options)`` returns the loss and
``name_and_grad(*arrays, out=None, grad_output=None, **options)`` returns LossAndGrad.
The arrays are the criterion's call arguments and the options its constructor's, e.g.
``mse_loss(x, y, reduction='sum')``, ``binary_cross_entropy_and_grad(p, y, weight=w)``.
"""
from .losses import FUNCTIONAL_NAMES

__all__ = []


def _make(criterion, name):
    def loss(*arrays, **options):
        return criterion(**options).loss(*arrays)

    def loss_and_grad(*arrays, out=None, grad_output=None, **options):
        return criterion(**options)(*arrays, out=out, grad_output=grad_output)

    summary = f"{criterion.__name__}(**options){{}}(*arrays): see fastloss.{criterion.__name__}."
    for function, suffix, doc in ((loss, "", ".loss"), (loss_and_grad, "_and_grad", "")):
        function.__name__ = function.__qualname__ = name + suffix
        function.__doc__ = summary.format(doc) + "\n\n" + (criterion.__doc__ or "")
        globals()[name + suffix] = function
        __all__.append(name + suffix)


for _criterion, _name in FUNCTIONAL_NAMES.items():
    _make(_criterion, _name)
del _criterion, _name
