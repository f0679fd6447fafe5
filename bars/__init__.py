"""bars: open benchmarking for CTR prediction."""

import os

__version__ = "0.1.0"

# oneMKL's conditional numerical reproducibility, strict (unless the user set MKL_CBWR): CPU matrix products then sum
# each output over the inner dimension in one fixed order, whatever the number of rows, threads or the buffers'
# alignment. Without it, MKL chooses its blocking from the machine's reported caches, and on some hosts a Linear
# of a 600-row batch differs in the last bit from the same rows scored 256 at a time, so validation metrics would
# depend on train.eval_batch_size (tests/test_models.py::test_eval_outputs_do_not_depend_on_the_batching). MKL
# reads the variable at its first call, so this must run before any matrix product (importing bars does it); the
# value in force is recorded with every run (tag ``mkl_cbwr``). Cost: 0-4 % on DCN/GDCN/DeepFM training steps.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
