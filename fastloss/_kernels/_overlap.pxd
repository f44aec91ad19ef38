# Whether two ndarrays share memory, by their byte extents: the plain calls' out= check in the
# kernel modules (softmax's plain_class_rows, pointwise's plain_operands).
cimport numpy as cnp


cdef inline bint bytes_apart(object a, object b) noexcept:
    """Whether two C-contiguous ndarrays share no byte."""
    cdef char* a0 = <char*> cnp.PyArray_DATA(<cnp.ndarray> a)
    cdef char* b0 = <char*> cnp.PyArray_DATA(<cnp.ndarray> b)
    return a0 >= b0 + cnp.PyArray_NBYTES(<cnp.ndarray> b) or b0 >= a0 + cnp.PyArray_NBYTES(<cnp.ndarray> a)
