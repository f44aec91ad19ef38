"""Which x86-64 level this CPU (and its operating system) supports: see cpu.h. Built for the
baseline CPU, so it runs anywhere, before any kernel built for a higher level is loaded."""

cdef extern from "cpu.h":
    int fl_cpu_level()


def level():
    """'v4', 'v3', 'v2' or 'v1' on x86-64 (the best level this CPU runs); None elsewhere."""
    cdef int found = fl_cpu_level()
    return f"v{found}" if found else None
