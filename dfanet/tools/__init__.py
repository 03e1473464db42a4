"""The ``dfanet`` command and its tools: the command line (:mod:`.cli`), ``predict`` (masks from images), ``summary``
(parameters and MACs) and ``bench`` (the speed comparison). Uses :mod:`dfanet` and :mod:`dfanet.training`; neither
imports it."""
