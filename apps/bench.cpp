#include "bench.h"

#include <darknight/version.h>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "common.h"
#include "protocol/error.h"

namespace darknight::app {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct Problem {
  std::string figure, label;
  int repeat = 0;  ///< 0: the --repeat default
  std::vector<std::string> args;
};

/// A suite name (bench/problems/NAME.txt) or a file.
std::string suite_path(const std::string& suite) {
  if (fs::is_regular_file(suite)) return suite;
  const fs::path p = fs::path(DK_PROBLEMS_DIR) / (suite + ".txt");
  if (fs::is_regular_file(p)) return p.string();
  std::vector<std::string> names;
  if (fs::is_directory(DK_PROBLEMS_DIR))
    for (const auto& e : fs::directory_iterator(DK_PROBLEMS_DIR))
      if (e.path().extension() == ".txt") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  throw Error(
      fmt::format("bench: no suite '{}' (a file, or one of: {})", suite, fmt::join(names, ", ")));
}

/// Lines `FIGURE LABEL [repeat=N] infer|train ARGS...`; `set NAME WORDS...` defines
/// ${NAME} (${OUT} is the output directory); '#' starts a comment. Words are separated by
/// spaces (no quoting).
std::vector<Problem> parse_suite(const std::string& path, const std::string& out_dir) {
  std::ifstream in(path);
  DK_CHECK(in.good(), "bench: cannot read {}", path);
  std::map<std::string, std::string> vars{{"OUT", out_dir}};
  std::vector<Problem> out;
  std::string line;
  for (int no = 1; std::getline(in, line); ++no) {
    line = line.substr(0, line.find('#'));
    static const std::regex var(R"(\$\{([A-Za-z0-9_]+)\})");
    std::smatch m;
    while (std::regex_search(line, m, var)) {
      const auto it = vars.find(m[1]);
      DK_CHECK(it != vars.end(), "{}:{}: ${{{}}} is not set", path, no, m[1].str());
      line = m.prefix().str() + it->second + m.suffix().str();
    }
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string s; words >> s;) w.push_back(s);
    if (w.empty()) continue;
    if (w[0] == "set") {
      DK_CHECK(w.size() >= 2, "{}:{}: set NAME WORDS...", path, no);
      std::string value;
      for (size_t i = 2; i < w.size(); ++i) value += (i > 2 ? " " : "") + w[i];
      vars[w[1]] = value;
      continue;
    }
    Problem p;
    DK_CHECK(w.size() >= 3, "{}:{}: expected FIGURE LABEL [repeat=N] infer|train ARGS", path, no);
    p.figure = w[0], p.label = w[1];
    size_t i = 2;
    if (w[i].rfind("repeat=", 0) == 0) p.repeat = std::stoi(w[i++].substr(7));
    DK_CHECK(i < w.size() && (w[i] == "infer" || w[i] == "train"),
             "{}:{}: expected infer or train after the label", path, no);
    p.args.assign(w.begin() + static_cast<std::ptrdiff_t>(i), w.end());
    out.push_back(std::move(p));
  }
  DK_CHECK(!out.empty(), "bench: {} lists no problems", path);
  return out;
}

/// Runs this executable with `args`, output to `log`; returns the exit status.
int run_self(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  std::string self = fs::read_symlink("/proc/self/exe").string();
  argv.push_back(self.data());
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  DK_CHECK(pid >= 0, "bench: fork failed");
  if (pid == 0) {
    std::FILE* f = std::fopen(log.c_str(), "w");
    if (f) {
      dup2(fileno(f), 1);
      dup2(fileno(f), 2);
    }
    execv(self.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void flatten(const json& j, const std::string& prefix, std::map<std::string, double>& out) {
  if (j.is_number()) {
    out[prefix] = j.get<double>();
  } else if (j.is_object()) {
    for (const auto& [k, v] : j.items()) flatten(v, prefix.empty() ? k : prefix + "." + k, out);
  }
}

/// A report's numbers, with per-image times added (`per_image.*`).
std::map<std::string, double> metrics(const json& rep) {
  std::map<std::string, double> m;
  flatten(rep, "", m);
  const double images = rep.value("images", 0.0);
  if (images > 0) {
    for (const auto& [k, v] : std::map<std::string, double>(m))
      if (k.rfind("seconds_by_kind.", 0) == 0) m["per_image." + k.substr(16)] = v / images;
    if (m.count("seconds")) m["per_image.seconds"] = m["seconds"] / images;
    if (m.count("train_seconds")) m["per_image.train_seconds"] = m["train_seconds"] / images;
  }
  return m;
}

std::string read_line(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);)
    if (l.rfind(key, 0) == 0) return l.substr(l.find(':') + 2);
  return "unknown";
}

std::string tail(const std::string& path, size_t lines) {
  std::ifstream in(path);
  std::vector<std::string> all;
  for (std::string l; std::getline(in, l);) all.push_back(l);
  std::string s;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i)
    s += "    " + all[i] + "\n";
  return s;
}

}  // namespace

CLI::App* add_bench_command(CLI::App& app, BenchOptions& o) {
  auto* c = app.add_subcommand(
      "bench",
      "Run a suite of infer/train problems (the paper's experiments), repeated, and write "
      "results.json, results.csv, tables.md and plots to --out");
  c->add_option("--suite", o.suite,
                "quick (a few minutes), paper (under an hour) or a problem file "
                "(bench/problems/*.txt shows the format)")
      ->capture_default_str();
  c->add_option("--out", o.out, "Output directory")->capture_default_str();
  c->add_option("--repeat", o.repeat, "Runs per problem (after each run's own warm-up)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("--only", o.only, "Run only the problems of these figures (e.g. fig2b,fig4)");
  c->add_flag("!--no-plots", o.plots, "Skip tables and plots (scripts/bench_plots.py)");
  return c;
}

namespace {

/// The suite's problems, only those of --only's figures when given.
std::vector<Problem> select_problems(const BenchOptions& o, const std::string& path) {
  std::vector<Problem> problems = parse_suite(path, o.out);
  if (!o.only.empty()) {
    const std::string only = "," + o.only + ",";
    std::erase_if(problems, [&](const Problem& p) {
      return only.find("," + p.figure + ",") == std::string::npos;
    });
  }
  DK_CHECK(!problems.empty(), "bench: no problem of figure '{}' in {}", o.only, path);
  return problems;
}

/// The machine and the run, for results.json.
json environment(const BenchOptions& o, const std::string& path) {
  const std::time_t t = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  const char* omp = std::getenv("OMP_NUM_THREADS");
  return {{"date", date},
          {"darknight", DARKNIGHT_VERSION},
          {"suite", path},
          {"cpu", read_line("/proc/cpuinfo", "model name")},
          {"cores", std::thread::hardware_concurrency()},
          {"OMP_NUM_THREADS", omp ? omp : "unset (all cores)"},
          {"repeat", o.repeat}};
}

/// A problem's files: runs/STEM.R.json and .log.
std::string file_stem(const Problem& p) {
  std::string stem = fmt::format("{}-{}", p.figure, p.label);
  for (char& c : stem)
    if (!std::isalnum(static_cast<unsigned char>(c)) && !std::strchr("._=+-()", c)) c = '_';
  return stem;
}

/// Each metric's median, min and max over the runs (also as rows of results.csv).
json summarize(const Problem& p, std::map<std::string, std::vector<double>>& values,
               std::ofstream& csv) {
  json summary = json::object();
  for (auto& [k, v] : values) {
    std::sort(v.begin(), v.end());
    const double median =
        v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
    summary[k] = {{"median", median}, {"min", v.front()}, {"max", v.back()}};
    csv << fmt::format("{},{},{},{:.6g},{:.6g},{:.6g},{}\n", p.figure, p.label, k, median,
                       v.front(), v.back(), v.size());
  }
  return summary;
}

/// Runs problem `i` of `count` its number of times; its entry of results.json. Adds its
/// failed runs to `failed`.
json run_problem(const BenchOptions& o, const Problem& p, size_t i, size_t count,
                 std::ofstream& csv, int& failed) {
  const int runs = p.repeat > 0 ? p.repeat : o.repeat;
  const std::string stem = file_stem(p);
  json entry = {{"figure", p.figure},
                {"label", p.label},
                {"command", "darknight " + fmt::format("{}", fmt::join(p.args, " "))},
                {"runs", json::array()}};
  std::map<std::string, std::vector<double>> values;
  for (int r = 0; r < runs; ++r) {
    const fs::path dir = fs::path(o.out) / "runs";
    const std::string report = (dir / fmt::format("{}.{}.json", stem, r)).string();
    const std::string log = (dir / fmt::format("{}.{}.log", stem, r)).string();
    std::vector<std::string> args = p.args;
    args.insert(args.end(), {"--report", report});
    const double t0 = now();
    const int rc = run_self(args, log);
    const double secs = now() - t0;
    std::printf("[%zu/%zu] %s %s run %d/%d: %.1f s%s\n", i + 1, count, p.figure.c_str(),
                p.label.c_str(), r + 1, runs, secs,
                rc ? fmt::format(" FAILED (exit {}), log {}", rc, log).c_str() : "");
    std::fflush(stdout);
    if (rc != 0) {
      std::printf("%s", tail(log, 5).c_str());
      ++failed;
      continue;
    }
    std::ifstream f(report);
    json rep = json::parse(f);
    for (const auto& [k, v] : metrics(rep)) values[k].push_back(v);
    entry["runs"].push_back(std::move(rep));
  }
  entry["summary"] = summarize(p, values, csv);
  return entry;
}

}  // namespace

int run_bench(const BenchOptions& o) {
  const std::string path = suite_path(o.suite);
  const std::vector<Problem> problems = select_problems(o, path);
  fs::create_directories(fs::path(o.out) / "runs");
  json env = environment(o, path);
  std::printf("bench: %zu problems from %s, %d runs each, on %s (%u cores); writing %s\n",
              problems.size(), path.c_str(), o.repeat, env["cpu"].get<std::string>().c_str(),
              std::thread::hardware_concurrency(), o.out.c_str());

  json results = json::array();
  std::ofstream csv(fs::path(o.out) / "results.csv");
  csv << "figure,label,metric,median,min,max,runs\n";
  int failed = 0;
  const double start = now();
  for (size_t i = 0; i < problems.size(); ++i)
    results.push_back(run_problem(o, problems[i], i, problems.size(), csv, failed));
  env["seconds"] = now() - start;
  std::ofstream(fs::path(o.out) / "results.json")
      << json{{"environment", env}, {"problems", results}}.dump(1) << "\n";
  std::printf(
      "bench: %zu problems in %.0f s, %d failed runs; results in %s/results.json and "
      "results.csv\n",
      problems.size(), now() - start, failed, o.out.c_str());
  if (o.plots) {
    const std::string cmd =
        fmt::format("/usr/bin/python3 {}/bench_plots.py '{}'", DK_SCRIPTS_DIR, o.out);
    if (std::system(cmd.c_str()) != 0)
      std::fprintf(stderr, "darknight: warning: tables and plots failed (%s)\n", cmd.c_str());
  }
  return failed ? 1 : 0;
}

}  // namespace darknight::app
