// onnxcam_demo: explain images from C++ through onnxcam_embed, once each, then (optionally) again
// from several threads, checking every threaded result against the first one.
//
//   onnxcam_demo MODEL IMAGE... [--target N] [--provider cpu] [--out DIR] [--threads T --calls C]
//
// Prints one line per image, and with --calls a JSON summary line: calls made, results that
// differ from the first pass, seconds, and the process's RSS (KiB) after every 100 calls of thread 0.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "onnxcam/embed.hpp"

namespace {

struct Arguments {
  onnxcam::Options options;
  std::vector<std::string> images;
  std::optional<int64_t> target;
  std::string out;
  int threads = 1;
  int calls = 0;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

Arguments parse(int argc, char** argv) {
  Arguments args;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--target") args.target = std::stoll(value());
    else if (flag == "--provider") args.options.provider = value();
    else if (flag == "--python") args.options.python = value();
    else if (flag == "--out") args.out = value();
    else if (flag == "--threads") args.threads = std::stoi(value());
    else if (flag == "--calls") args.calls = std::stoi(value());
    else if (flag.rfind("--", 0) == 0) throw UsageError("unknown option " + flag);
    else positional.push_back(flag);
  }
  if (positional.size() < 2) throw UsageError("give a model and at least one image");
  if (args.threads < 1 || args.calls < 0) throw UsageError("--threads must be at least 1 and --calls at least 0");
  args.options.model = positional[0];
  args.images.assign(positional.begin() + 1, positional.end());
  return args;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError("cannot read '" + path + "'");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) throw UsageError("cannot write '" + path + "'");
}

long rss_kib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

bool same(const onnxcam::Explanation& a, const onnxcam::Explanation& b) {
  return a.target == b.target && a.score == b.score && a.heatmap == b.heatmap && a.overlay_png == b.overlay_png;
}

// One line of results.jsonl: what the test compares with the Python API's result.
std::string record(size_t index, const onnxcam::Explanation& result) {
  char score[32];
  std::snprintf(score, sizeof score, "%.9g", result.score);
  std::ostringstream line;
  line << "{\"index\": " << index << ", \"target\": " << result.target << ", \"score\": " << score
       << ", \"height\": " << result.height << ", \"width\": " << result.width << "}\n";
  return line.str();
}

std::vector<onnxcam::Explanation> first_pass(const onnxcam::Explainer& explainer, const Arguments& args,
                                             const std::vector<std::string>& images) {
  std::vector<onnxcam::Explanation> results;
  std::string lines;
  for (size_t i = 0; i < images.size(); ++i) {
    results.push_back(explainer.explain(images[i], args.target));
    const auto& r = results.back();
    std::cout << args.images[i] << ": class " << r.target << ", score " << r.score << ", map " << r.height << "x"
              << r.width << ", overlay " << r.overlay_png.size() << " bytes\n";
    lines += record(i, r);
    if (!args.out.empty()) {
      const std::string stem = args.out + "/" + std::to_string(i);
      write_file(stem + ".heatmap.f32", r.heatmap.data(), r.heatmap.size() * sizeof(float));
      write_file(stem + ".overlay.png", r.overlay_png.data(), r.overlay_png.size());
    }
  }
  if (!args.out.empty()) write_file(args.out + "/results.jsonl", lines.data(), lines.size());
  return results;
}

void threaded_pass(const onnxcam::Explainer& explainer, const Arguments& args, const std::vector<std::string>& images,
                   const std::vector<onnxcam::Explanation>& expected) {
  std::atomic<int> mismatches{0};
  std::vector<long> rss;
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < args.threads; ++t) {
    workers.emplace_back([&, t] {
      for (int call = 0; call < args.calls; ++call) {
        const size_t i = static_cast<size_t>(t + call) % images.size();
        if (!same(explainer.explain(images[i], args.target), expected[i])) ++mismatches;
        if (t == 0 && (call + 1) % 100 == 0) rss.push_back(rss_kib());
      }
    });
  }
  for (auto& worker : workers) worker.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::cout << "{\"calls\": " << args.threads * args.calls << ", \"mismatches\": " << mismatches.load()
            << ", \"seconds\": " << seconds << ", \"rss_kib\": [";
  for (size_t i = 0; i < rss.size(); ++i) std::cout << (i ? ", " : "") << rss[i];
  std::cout << "]}\n";
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Arguments args = parse(argc, argv);
    std::vector<std::string> images;
    for (const auto& path : args.images) images.push_back(read_file(path));
    const onnxcam::Explainer explainer(args.options);
    const auto expected = first_pass(explainer, args, images);
    if (args.calls > 0) threaded_pass(explainer, args, images, expected);
    return 0;
  } catch (const onnxcam::Error& error) {
    std::cerr << "Error: " << error.what() << "\n";
    return error.user_error() ? 1 : 3;
  } catch (const UsageError& error) {
    std::cerr << "Error: " << error.what() << "\nusage: onnxcam_demo MODEL IMAGE... [--target N] [--provider "
                 "auto|cpu|cuda] [--python PATH] [--out DIR] [--threads T --calls C]\n";
    return 2;
  } catch (const std::exception& error) {  // std::stoi on a bad number
    std::cerr << "Error: " << error.what() << "\n";
    return 2;
  }
}
