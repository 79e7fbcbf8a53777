// The embedded interpreter and the calls into onnxcam (see include/onnxcam/embed.hpp).
#include "onnxcam/embed.hpp"

#include <pybind11/embed.h>
#include <pybind11/numpy.h>

#include <mutex>

namespace py = pybind11;

namespace onnxcam {

Error::Error(std::string kind, const std::string& message, bool user_error)
    : std::runtime_error(message), kind_(std::move(kind)), user_error_(user_error) {}

namespace {

// Python starts once per process and lives until it ends: finalising it while ONNX Runtime's
// thread pools and OpenCV's are alive is not safe, and a service has no use for a restart.
void start_interpreter(std::string python) {
  if (python.empty()) python = ONNXCAM_PYTHON;
  static std::once_flag started;
  std::call_once(started, [&] {
    PyConfig config;
    PyConfig_InitPythonConfig(&config);  // honours PYTHONPATH and the other PYTHON* variables
    if (!python.empty()) {
      // Python finds a venv's packages from the pyvenv.cfg beside the executable it thinks it is.
      PyStatus status = PyConfig_SetBytesString(&config, &config.program_name, python.c_str());
      if (PyStatus_Exception(status)) {
        PyConfig_Clear(&config);
        throw Error("ConfigError", "cannot use Python '" + python + "'; give the path of a python executable", false);
      }
    }
    py::initialize_interpreter(&config, 0, nullptr, false);
    PyEval_SaveThread();  // the GIL is taken per call, by whichever thread calls
  });
}

bool is_onnxcam_error(const py::error_already_set& failure) {
  try {
    return failure.matches(py::module_::import("onnxcam").attr("OnnxCamError"));
  } catch (const py::error_already_set&) {  // onnxcam itself does not import
    return false;
  }
}

// Needs the GIL. onnxcam's own errors already are one line; others get their type in front.
Error translate(const py::error_already_set& failure) {
  const std::string kind = py::str(failure.type().attr("__name__"));
  const bool user_error = is_onnxcam_error(failure);
  std::string message = py::str(failure.value());
  if (!user_error) message = kind + ": " + message;
  return Error(kind, message.substr(0, message.find('\n')), user_error);
}

std::vector<uint8_t> to_vector(const py::bytes& data) {
  const std::string_view view = data;
  return {view.begin(), view.end()};
}

}  // namespace

struct Explainer::Impl {
  py::object explainer, overlay, encode_png;
};

Explainer::Explainer(const Options& options) : impl_(std::make_unique<Impl>()) {
  start_interpreter(options.python);
  py::gil_scoped_acquire gil;
  try {
    py::module_ onnxcam = py::module_::import("onnxcam");
    py::object threads = options.ort_threads > 0 ? py::object(py::int_(options.ort_threads)) : py::none();
    impl_->explainer = onnxcam.attr("Explainer")(options.model, py::arg("method") = options.method,
                                                 py::arg("provider") = options.provider, py::arg("threads") = threads);
    impl_->overlay = onnxcam.attr("overlay");
    impl_->encode_png = py::module_::import("onnxcam.io.render").attr("encode_png");
  } catch (const py::error_already_set& failure) {
    Error error = translate(failure);
    impl_.reset();  // while the GIL is held: the members are destroyed after it is released
    throw error;
  }
}

Explainer::~Explainer() {
  py::gil_scoped_acquire gil;  // Python objects are released under the GIL
  impl_.reset();
}

Explanation Explainer::explain(std::string_view image, std::optional<int64_t> target) const {
  py::gil_scoped_acquire gil;
  try {
    py::object wanted = target ? py::object(py::int_(*target)) : py::none();
    py::object result = impl_->explainer.attr("explain")(py::bytes(image.data(), image.size()),
                                                         py::arg("target") = wanted);
    using Floats = py::array_t<float, py::array::c_style | py::array::forcecast>;
    auto cam = Floats::ensure(result.attr("cam")[py::int_(0)]);
    Explanation out;
    out.target = result.attr("target")[py::int_(0)].cast<int64_t>();
    out.score = result.attr("scores")[py::int_(0)].cast<float>();
    out.height = cam.shape(0);
    out.width = cam.shape(1);
    out.heatmap.assign(cam.data(), cam.data() + cam.size());
    py::object picture = impl_->overlay(result.attr("images")[py::int_(0)], cam);
    out.overlay_png = to_vector(impl_->encode_png(picture));
    return out;
  } catch (const py::error_already_set& failure) {
    throw translate(failure);
  }
}

}  // namespace onnxcam
