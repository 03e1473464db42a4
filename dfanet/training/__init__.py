"""Training and evaluation of DFANet (the application side; the model itself is :mod:`dfanet`): data sets, the
paper's segmentation and backbone-pretraining recipes, the shared training loop with checkpoints and resume,
distributed runs, mIoU evaluation. Needs the ``app`` extra (``pip install 'dfanet-kernels[app]'``)."""
