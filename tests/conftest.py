"""One torch and BLAS thread per test worker: pytest-xdist already runs one worker per core, and the scripts under
test train with one thread each."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
