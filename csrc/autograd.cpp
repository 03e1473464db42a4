// The compiled ops are inference-only: a backward through one raises, naming the op. One C++ kernel for the Autograd
// key of every dfanet op: it runs the op below autograd and, when an input needs a gradient, gives the outputs a
// graph node that raises on backward. Without it PyTorch's fallback lets backward() run and gives the op's inputs no
// gradient, with only a one-time warning: training through them would be silently wrong.
// In C++ rather than torch.library.register_autograd: that Python kernel ran on every call, grad mode or not, and
// took ~12 us of a block's ~45 us at 4 x 4 pixels (0.7 ms of DFANet's 57 op calls per forward, AMD EPYC, 1 thread).
// The Triton ops (dfanet::<op>_triton, torch.library.triton_op) have their own refusal.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <string>
#include <vector>

namespace dfanet {
namespace {

void refuse_backward(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  std::vector<at::Tensor> needs_grad;
  if (at::GradMode::is_enabled()) {
    for (const c10::IValue& arg : torch::jit::last(*stack, schema.arguments().size())) {
      if (arg.isTensor()) {
        if (arg.toTensor().requires_grad()) needs_grad.push_back(arg.toTensor());
      } else if (arg.isTensorList()) {
        for (const at::Tensor& t : arg.toTensorList()) {
          if (t.requires_grad()) needs_grad.push_back(t);
        }
      }
    }
  }
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
  }
  if (needs_grad.empty()) return;
  const std::string name = schema.operator_name().name;
  auto node = c10::make_intrusive<torch::autograd::Error>(
      name + " is inference-only and has no backward: train the unfused modules (DFANet in train(), or "
             "backend='reference'), or run the fused op under torch.no_grad()",
      torch::autograd::collect_next_edges(needs_grad));
  for (const c10::IValue& out : torch::jit::last(*stack, schema.returns().size())) {
    if (out.isTensor() && torch::autograd::isDifferentiableType(out.toTensor().scalar_type())) {
      torch::autograd::set_history(out.toTensor(), node);
    }
  }
}

}  // namespace

// The op names as in dfanet_kernels/constants.py OPS (tests/kernels/test_backends.py checks every op raises).
TORCH_LIBRARY_IMPL(dfanet, Autograd, m) {
  for (const char* op : {"dwsep_conv", "xception_block", "conv1x1", "conv3x3", "fc_attention", "upsample_concat",
                         "upsample_add", "upsample_labels", "decoder_head"}) {
    m.impl(op, torch::CppFunction::makeFromBoxedFunction<&refuse_backward>());
  }
}

}  // namespace dfanet
