// dfanet_infer MODEL.pt2 IMAGE.png OUT.png
//
// Segments one image with a DFANet package from `dfanet export --format pt2`, without Python: loads the kernels'
// library (whose static initialisers register the dfanet:: ops the package calls), the package, normalises the
// image as dfanet/training/images.py does, runs the model and writes the train-id mask (each pixel's class index,
// the argmax of the logits) as an 8-bit greyscale PNG.
#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/ops/empty.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#define STBI_ONLY_PNG
#define STB_IMAGE_IMPLEMENTATION
#include "stb_image.h"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "stb_image_write.h"

namespace {

// The ImageNet statistics of dfanet/training/images.py, rounded from double to float as torch.tensor(MEAN) does.
const float kMean[3] = {static_cast<float>(0.485), static_cast<float>(0.456), static_cast<float>(0.406)};
const float kStd[3] = {static_cast<float>(0.229), static_cast<float>(0.224), static_cast<float>(0.225)};

void load_kernels() {
  const char* path = std::getenv("DFANET_KERNELS_LIBRARY");  // overrides the library the build was pointed at
  if (path == nullptr || *path == '\0') path = DFANET_KERNELS_LIBRARY;
  // RTLD_NOW: a library that cannot resolve its symbols fails here, not at the first op.
  if (dlopen(path, RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    throw std::runtime_error(std::string("cannot load the kernels' library: ") + dlerror());
  }
}

// The N x C x H x W input the package was exported for (dfanet/pt2.py records it: the compiled code checks nothing).
std::vector<int64_t> input_shape(torch::inductor::AOTIModelPackageLoader& loader, const std::string& model) {
  const auto metadata = loader.get_metadata();
  const auto found = metadata.find("dfanet.input_shape");
  if (found == metadata.end()) throw std::runtime_error(model + ": not a DFANet package (dfanet export --format pt2)");
  std::vector<int64_t> shape;
  size_t start = 0;
  for (size_t end; (end = found->second.find('x', start)) != std::string::npos; start = end + 1) {
    shape.push_back(std::stoll(found->second.substr(start, end - start)));
  }
  shape.push_back(std::stoll(found->second.substr(start)));
  return shape;
}

// The 1 x 3 x H x W float input: 8-bit RGB / 255, minus the mean, over the std, in float32 as NumPy and torch do.
at::Tensor read_image(const std::string& path, const std::vector<int64_t>& shape) {
  if (stbi_is_16_bit(path.c_str())) {  // dfanet scales 16-bit grey with rounding; stb would truncate: refused
    throw std::runtime_error(path + ": a 16-bit PNG; this example reads 8-bit PNGs only");
  }
  int width = 0, height = 0, channels = 0;
  std::unique_ptr<stbi_uc, decltype(&stbi_image_free)> pixels(
      stbi_load(path.c_str(), &width, &height, &channels, 3), &stbi_image_free);  // grey, alpha, palette -> RGB
  if (!pixels) throw std::runtime_error(path + ": cannot read as a PNG (" + stbi_failure_reason() + ")");
  if (shape != std::vector<int64_t>{1, 3, height, width}) {
    std::string expected;
    for (const int64_t n : shape) expected += (expected.empty() ? "" : "x") + std::to_string(n);
    throw std::runtime_error(path + ": " + std::to_string(height) + "x" + std::to_string(width) +
                             " (HxW), but the package takes one image of " + expected + " (NxCxHxW)");
  }
  at::Tensor x = at::empty({1, 3, height, width}, at::kFloat);
  float* out = x.data_ptr<float>();
  const int64_t plane = static_cast<int64_t>(height) * width;
  for (int c = 0; c < 3; ++c) {
    for (int64_t i = 0; i < plane; ++i) {
      out[c * plane + i] = (static_cast<float>(pixels.get()[3 * i + c]) / 255.0f - kMean[c]) / kStd[c];
    }
  }
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: dfanet_infer MODEL.pt2 IMAGE.png OUT.png\n";
    return 2;
  }
  const std::string model = argv[1], image = argv[2], out = argv[3];
  try {
    load_kernels();
    if (!std::filesystem::is_regular_file(model)) throw std::runtime_error(model + ": no such file");
    torch::inductor::AOTIModelPackageLoader loader(model);
    const at::Tensor x = read_image(image, input_shape(loader, model));
    const at::Tensor logits = loader.run({x}).at(0);
    if (logits.size(1) > 256) throw std::runtime_error(model + ": over 256 classes do not fit an 8-bit mask");
    const at::Tensor mask = logits.argmax(1).squeeze(0).to(at::kByte).contiguous();
    if (!stbi_write_png(out.c_str(), static_cast<int>(mask.size(1)), static_cast<int>(mask.size(0)), 1,
                        mask.data_ptr<uint8_t>(), static_cast<int>(mask.size(1)))) {
      throw std::runtime_error(out + ": cannot write the PNG");
    }
  } catch (const c10::Error& err) {  // torch's errors: the message without its C++ stack trace
    std::cerr << "dfanet_infer: " << err.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& err) {
    std::cerr << "dfanet_infer: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
