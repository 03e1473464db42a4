"""DFANet's fused inference path: BN folded into the convolutions, the network run through dfanet_kernels' ops.

Folding happens once and is redone whenever a parameter or buffer changes (load_state_dict, more training, an
in-place edit, .to(), a parameter, buffer or submodule assigned) or the model's backend does: the cache (FoldCache,
one per model) is keyed on every tensor's version counter and storage (_FoldKey) and on torch's module registration
hooks (_StructureEdits). DFANet also refolds at once on eval(), load_state_dict(), .to() and a backend change: fused
optimisers (Adam(fused=True)) and in-place edits through ``.data`` change weights without a version bump, and a
torch.compile'd model runs the fold it was traced with (a graph constant; the trace recompiles when the model gets a
new one). Not caught: such an edit or a fused optimiser step in eval mode, and a structural edit that bypasses the
hooks (``del`` of a parameter, buffer or submodule; a parameter set to None); call eval() again after one.
Every folded layer is one of dfanet_kernels' prepared ops, so its weights are checked when they are folded, not on
each call: the image is checked by the first conv's public op, and every later input is made by the ops themselves.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING

import torch

import dfanet_kernels as dk

from .layers import ConvBNReLU, XceptionBlock

if TYPE_CHECKING:
    from .model import DFANet


@dataclass
class FoldedDFANet:
    """Every layer with BN folded in, prepared for one backend; the stem run by the library's conv3x3 (one kernel
    on the compiled backends, NHWC out; F.conv2d on the reference), the decoder by its decoder_head."""

    backend: str
    stem: dk.PreparedConv
    stages: list[list[list[dk.PreparedBlock]]]  # [backbone][stage][block]
    attention: list[dk.PreparedAttention]
    decoder: dk.PreparedDecoder


def _fold_conv(block: ConvBNReLU, name: str, backend: str) -> dk.PreparedConv:
    weight, bias = dk.fold_conv_bn(block.conv, block.bn, name)
    return dk.PreparedConv(weight, bias, block.conv.stride[0], block.has_relu, backend)


def _fold_block(block: XceptionBlock, name: str, backend: str) -> dk.PreparedBlock:
    dw_weights, pw_weights, pw_biases = [], [], []
    for i, sep in enumerate((block.sep1, block.sep2, block.sep3), start=1):
        dk.check_finite(f"{name}.sep{i}.depthwise weight", sep.depthwise.weight)
        pw_weight, pw_bias = dk.fold_bn(sep.pointwise.weight, None, sep.bn, f"{name}.sep{i}")
        dw_weights.append(sep.depthwise.weight.detach().clone())
        pw_weights.append(pw_weight)
        pw_biases.append(pw_bias)
    shortcut = (None, None)
    if block.shortcut is not None:
        shortcut = dk.fold_conv_bn(block.shortcut.conv, block.shortcut.bn, f"{name}.shortcut")
    return dk.PreparedBlock(dw_weights, pw_weights, pw_biases, block.sep1.stride, *shortcut, backend=backend)


@torch.no_grad()
def fold_model(model: "DFANet") -> FoldedDFANet:
    """Fold every BatchNorm of ``model`` (eval statistics) into its conv and prepare each layer for the backend of
    ``model.backend`` on the weights' device; raises ValueError on non-finite weights."""
    weight = model.conv1.conv.weight
    backend = dk.backends.resolve(model.backend, weight.device, weight.dtype)
    stages = [
        [[_fold_block(b, f"backbones.{n}.stages.{i}.{j}", backend) for j, b in enumerate(stage)]
         for i, stage in enumerate(bb.stages)]
        for n, bb in enumerate(model.backbones)
    ]
    attention = []
    for n, bb in enumerate(model.backbones):
        conv_weight, conv_bias = dk.fold_conv_bn(bb.fca.conv, None, f"backbones.{n}.fca.conv")
        dk.check_finite(f"backbones.{n}.fca.fc weight", bb.fca.fc.weight)
        dk.check_finite(f"backbones.{n}.fca.fc bias", bb.fca.fc.bias)
        attention.append(dk.PreparedAttention(bb.fca.fc.weight.detach().clone(), bb.fca.fc.bias.detach().clone(),
                                              conv_weight, conv_bias, backend))
    dec = model.decoder
    low = [dk.fold_conv_bn(m.conv, m.bn, f"decoder.low_reduce.{n}") for n, m in enumerate(dec.low_reduce)]
    high = [dk.fold_conv_bn(m.conv, m.bn, f"decoder.high_reduce.{n}") for n, m in enumerate(dec.high_reduce)]
    fuse = dk.fold_conv_bn(dec.low_fuse.conv, dec.low_fuse.bn, "decoder.low_fuse")
    classifier = dk.fold_conv_bn(dec.classifier, None, "decoder.classifier")
    return FoldedDFANet(
        backend=backend,
        stem=_fold_conv(model.conv1, "conv1", backend),
        stages=stages,
        attention=attention,
        decoder=dk.PreparedDecoder([w for w, _ in low], [b for _, b in low], *fuse, [w for w, _ in high],
                                   [b for _, b in high], *classifier, backend=backend),
    )


@dataclass(frozen=True)
class Concat:
    """A channel concatenation not yet computed (what FusedRunner.concat returns): ``upsample_concat(inputs, size)``.

    DFANet.run hands every concatenation straight to ``stage``, whose first block reads it without writing it
    (``xception_block_cat``): at 1024 x 1024 the second and third backbones' enc2 input alone is 63 MB."""

    inputs: tuple[torch.Tensor, ...]
    size: tuple


class FusedRunner:
    """Computes each piece of DFANet.run with the prepared fused ops on folded weights."""

    def __init__(self, folded: FoldedDFANet):
        self.folded = folded

    def stem(self, x):
        # The model's one input from outside runs through the public, checked op: an image of the wrong dtype or
        # device fails here with an error naming it. The compiled backends' conv3x3 (CPU, Triton, CUDA) reads the
        # image in its own layout and writes NHWC: the one layout conversion of the network happens inside it. The
        # reference's F.conv2d writes the layout it reads, so there the image is converted first.
        stem = self.folded.stem
        if stem.backend == "reference":
            x = x.contiguous(memory_format=torch.channels_last)
        return dk.conv3x3(x, stem.weight, stem.bias, stem.stride, stem.relu, backend=stem.backend)

    def _block(self, block: dk.PreparedBlock, x: torch.Tensor | Concat) -> torch.Tensor:
        # One call per block: on the CPU the intermediate maps stay in cache, on CUDA in shared memory
        # (dfanet_kernels.xception_block), and a Concat input is read by the kernel without being written
        # (dfanet_kernels.xception_block_cat; Triton writes it first).
        if isinstance(x, Concat):
            if tuple(x.inputs[0].shape[-2:]) != x.size:  # not DFANet's case: the kernel resizes to inputs[0]'s size
                x = dk.upsample_concat(x.inputs, x.size, backend=block.backend)
            else:
                return block.cat(x.inputs)
        return block(x)

    def stage(self, backbone, stage, x):
        for block in self.folded.stages[backbone][stage]:
            x = self._block(block, x)
        return x

    def attention(self, backbone, x):
        # The scaled map is written, not the scale vector handed to its consumers (the decoder's 1x1 reduce and the
        # next backbone's first block): measured here (2 threads, 1024x1024) fc_attention on 192 ch at 64 x 64 takes
        # 0.33 ms, of which the scaled write is at most a copy pass, 0.18 ms: < 1% of the forward for all three
        # backbones, 3 MB each and off the memory peak, against per-sample scaled weights in two consumers.
        return self.folded.attention[backbone](x)

    def concat(self, inputs, size):
        return Concat(tuple(inputs), tuple(size))

    def add(self, inputs, size):
        return dk.upsample_add(inputs, tuple(size), backend=self.folded.backend)

    def labels(self, x, size):
        return dk.upsample_labels(x, tuple(size), backend=self.folded.backend)

    def decode(self, low, high):
        # One op on the CPU (decoder_head): the 32-channel maps at the output's size stay in per-thread rows.
        return self.folded.decoder(low, high)


_version, _device = attrgetter("_version"), attrgetter("device")


def _inference_safe_version(t: torch.Tensor) -> int:
    # Inference tensors (made under torch.inference_mode) have no version counter; they cannot be edited in place
    # outside inference mode, so their storage address stands for them.
    return -1 if t.is_inference() else t._version


class _StructureEdits:
    """Counts structural edits of any nn.Module in the process: a parameter, buffer or submodule registered or
    assigned (torch's global module registration hooks). A fold key walks its model's modules again only when the
    count moved: after a forward the module objects are out of cache, and the walk took ~0.7 ms of the ~1.4 ms the
    key cost per DFANet A 512 x 1024 forward (AMD EPYC, 1 thread); reading the 998 tensors' versions the rest."""

    count = 0

    @classmethod
    def bump(cls, *hook_args) -> None:
        cls.count += 1  # a lost increment under a thread race still differs from the count a key holds

    @classmethod
    def install(cls) -> None:
        from torch.nn.modules import module

        module.register_module_parameter_registration_hook(cls.bump)
        module.register_module_buffer_registration_hook(cls.bump)
        module.register_module_module_registration_hook(cls.bump)


_StructureEdits.install()


def _model_tensors(model: "DFANet") -> list[torch.Tensor]:
    """Every parameter and buffer of ``model``."""
    # A hand-written walk: Module.parameters()/buffers() (named_modules with memo sets and name building) took ~2 ms
    # per forward here, this ~0.3 ms with the modules in cache.
    tensors = []
    modules = [model]
    for module in modules:  # grows while it is walked
        if module is not None:
            tensors += module._parameters.values()
            tensors += module._buffers.values()
            modules += module._modules.values()
    return [t for t in tensors if t is not None]


class _SignatureWatch:
    """dfanet.WeightsWatch (csrc/weights_watch.cpp) in Python, where the compiled library is missing or predates it:
    each tensor's version counter, storage address and device, read again and compared."""

    def __init__(self, tensors: list[torch.Tensor]):
        self._tensors = tensors
        self._signature = self._read()

    def _read(self) -> tuple[list, list, list]:
        # map() over attribute getters: a loop building a tuple per tensor took twice as long.
        try:
            versions = list(map(_version, self._tensors))
        except RuntimeError:  # an inference tensor among them (rare: the fast path above stays for the rest)
            versions = list(map(_inference_safe_version, self._tensors))
        return versions, list(map(torch.Tensor.data_ptr, self._tensors)), list(map(_device, self._tensors))

    def unchanged(self) -> bool:
        return self._read() == self._signature


def _watch(tensors: list[torch.Tensor]):
    """Something whose ``unchanged()`` says whether any of ``tensors`` was edited in place, given other storage or
    moved since now: the compiled library's dfanet.WeightsWatch (one C++ call; the Python reads took ~0.6 ms a
    forward), else _SignatureWatch."""
    try:
        return torch.classes.dfanet.WeightsWatch(tensors)
    except RuntimeError:  # no compiled library, or one built before the class
        return _SignatureWatch(tensors)


@dataclass
class _FoldKey:
    """What a fold depends on: the backend asked for, and the model's parameters and buffers (``tensors``, the walk's
    result while the structure edit count was ``edits``), none changed since ``watch`` was made."""

    backend: str | None
    edits: int
    tensors: list[torch.Tensor]
    watch: object

    @classmethod
    def of(cls, model: "DFANet") -> "_FoldKey":
        edits = _StructureEdits.count  # read first: an edit during the walk makes the next check walk again
        tensors = _model_tensors(model)
        return cls(model.backend, edits, tensors, _watch(tensors))

    def holds(self, model: "DFANet") -> bool:
        """Whether ``model`` is still as this key saw it."""
        if model.backend != self.backend or not self.watch.unchanged():
            return False
        edits = _StructureEdits.count
        if edits != self.edits:  # some module somewhere was edited: the same tensors, in the same order?
            tensors = _model_tensors(model)
            if len(tensors) != len(self.tensors) or not all(map(operator.is_, tensors, self.tensors)):
                return False
            self.edits = edits  # in place: a key replaced meanwhile by another thread's fold is simply dropped
        return True


class FoldCache:
    """The fused path's folded weights for one model (DFANet.__init__ makes one, ``model._fold``): the only writer of
    fold state.

    It holds one immutable (key, FoldedDFANet) pair, or None, replaced in a single assignment, and ``runner`` reads it
    once: a forward that runs while another thread loads a state_dict gets the fold of the old weights or of the new
    ones, never None or a mixture. While a load is under way (``load_started`` to the ``refold`` that ends it, both
    called by DFANet's load_state_dict hooks) a forward keeps the fold it found; a fold a forward makes itself is
    kept only if no load began and no weight changed while it was made.
    """

    def __init__(self) -> None:
        self._entry: tuple[_FoldKey, FoldedDFANet] | None = None
        self._loading = False

    def __getstate__(self) -> dict:
        # A copy (copy.deepcopy, pickling the whole model) starts without a fold and makes its own when it first runs:
        # the key's compiled watch cannot be copied, and a copy of the folded weights would only be redone anyway.
        return {"_entry": None, "_loading": False}

    @property
    def folded(self) -> FoldedDFANet | None:
        """The current fold, or None."""
        entry = self._entry
        return None if entry is None else entry[1]

    def load_started(self) -> None:
        """The weights are being replaced (load_state_dict): forwards keep the current fold until ``refold``."""
        self._loading = True

    def refold(self, model: "DFANet") -> None:
        """Fold ``model``'s current weights now if it runs fused in eval (else drop the fold); ends a load. A fold that
        fails (non-finite weights, a backend unavailable on this device) leaves none: the next forward folds again and
        raises the error."""
        entry = None
        if model.fused and not model.training:
            try:
                entry = (_FoldKey.of(model), fold_model(model))
            except (ValueError, TypeError, RuntimeError):
                pass
        self._entry = entry
        self._loading = False

    def runner(self, model: "DFANet") -> FusedRunner:
        """The fused runner for ``model``'s current weights and backend, folding again only if either changed."""
        entry = self._entry  # read once: a refold on another thread replaces the pair, never changes it
        if torch.compiler.is_compiling():
            # The fold refold() made is a constant of the graph (fast to compile: folding in the graph took ~30x
            # longer). Without one, the graph folds from the parameters, non-finite checks included
            # (torch._assert_async).
            return FusedRunner(entry[1] if entry is not None else fold_model(model))
        while True:
            if entry is not None and (self._loading or entry[0].holds(model)):
                return FusedRunner(entry[1])
            key = _FoldKey.of(model)
            folded = fold_model(model)
            # A load that began or finished meanwhile may have copied some weights before the fold read them and
            # others after: such a fold is dropped for the one the load's refold makes.
            if not self._loading and key.holds(model):
                self._entry = (key, folded)
                return FusedRunner(folded)
            entry = self._entry
