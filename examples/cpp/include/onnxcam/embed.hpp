// onnxcam from C++: one embedded Python interpreter, one onnxcam.Explainer, a plain C++ API.
//
// The header carries no Python or pybind11 types, so a service links against onnxcam_embed and
// never sees them. Explainer::explain may be called from several threads at once: each call
// holds the GIL only while Python code runs; ONNX Runtime and OpenCV release it while they compute.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace onnxcam {

// A Python exception raised by onnxcam, carrying its one-line message. kind() is the Python class
// name: "InputError", "ModelError", ... for the user's mistakes (onnxcam.OnnxCamError subclasses);
// another name (e.g. "ModuleNotFoundError") means the Python environment itself is broken.
class Error : public std::runtime_error {
 public:
  Error(std::string kind, const std::string& message, bool user_error);
  const std::string& kind() const noexcept { return kind_; }
  bool user_error() const noexcept { return user_error_; }  // an onnxcam.OnnxCamError

 private:
  std::string kind_;
  bool user_error_;
};

struct Options {
  std::string model;                 // a plain .onnx (exported in memory) or a *.cam.onnx
  std::string method = "gradcam";
  std::string provider = "auto";     // "auto", "cpu" or "cuda"
  std::string python;                // the Python whose packages to use (a venv's bin/python); empty: the one built against
  int ort_threads = 0;               // ONNX Runtime intra-op threads per call; 0: its default
};

struct Explanation {
  int64_t target = -1;               // the class (task index) explained
  float score = 0.0f;                // the score that was differentiated
  std::vector<float> heatmap;        // row-major, values in [0, 1], at the model's input size
  int64_t height = 0, width = 0;     // the heatmap's shape
  std::vector<uint8_t> overlay_png;  // the map over the image, at the image's size
};

class Explainer {
 public:
  // Starts the interpreter on first use (once per process) and builds the onnxcam.Explainer.
  explicit Explainer(const Options& options);
  ~Explainer();
  Explainer(const Explainer&) = delete;
  Explainer& operator=(const Explainer&) = delete;

  // image: an encoded image (PNG, JPEG, ...); target: the class to explain, or the task's default.
  Explanation explain(std::string_view image, std::optional<int64_t> target = std::nullopt) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace onnxcam
