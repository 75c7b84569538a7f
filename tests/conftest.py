import os

# Triton reads this when `triton.jit` decorates a kernel, i.e. at import of s2d_fast.kernels:
# it must be set before any test module imports the package, so that the kernels run on CPU
# tensors through the interpreter on machines without a GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")
