import os

import torch

# Without a GPU the Triton kernels can only run under Triton's interpreter; it must be chosen before triton is
# imported. On a GPU machine the kernels run natively and this stays unset.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
