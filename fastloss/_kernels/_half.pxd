# Half data in the kernels' loops (half.h): the conversions, and which kind an array holds.
cimport numpy as cnp

cdef extern from "half.h" nogil:
    enum:
        FL_FLOAT16
        FL_BFLOAT16
    void fl_widen_half(int kind, const void* src, float* dst, Py_ssize_t n)
    void fl_narrow_half(int kind, const float* src, void* dst, Py_ssize_t n)


cdef inline int half_kind(object a) except -1:
    """0 for an absent or float32/float64 array, else half.h's kind of the 2-byte float array."""
    if a is None or (<cnp.ndarray> a).dtype.itemsize != 2:
        return 0
    return FL_FLOAT16 if (<cnp.ndarray> a).dtype.num == cnp.NPY_FLOAT16 else FL_BFLOAT16
