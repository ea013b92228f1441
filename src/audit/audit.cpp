#include "audit/audit.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>
#include <tuple>

#include "audit/capture.h"
#include "audit/fastica.h"
#include "audit/gradients.h"
#include "audit/image_grid.h"
#include "audit/labels.h"
#include "audit/lattice.h"
#include "audit/reference.h"

namespace darknight::audit {
namespace {

using Mat = Eigen::MatrixXd;

/// One attack's results on one kind of tensor of one layer.
struct Tally {
  std::vector<double> real, control;          // per true input (labels: per virtual batch)
  std::vector<double> real_hit, control_hit;  // per true input / batch: recovered or not
  int64_t groups = 0, covered = -1;
  std::string scored_by;
  std::vector<std::pair<Eigen::VectorXd, Eigen::VectorXd>> shown;  // (original, recovered)
  std::vector<int64_t> image_shape;
};

using Key =
    std::tuple<std::string, int64_t, std::string, std::string>;  // attack, layer, tensor, variant

constexpr double kRecovered = 0.9;  // |correlation| at which an input counts as recovered
constexpr size_t kShown = 12;       // originals and recoveries in each PNG grid

/// Spatial first differences along the last axis (width) of each row's tensor: filtering
/// commutes with mixing, and differences of images are far from Gaussian.
Mat differences(const Mat& x, int64_t width) {
  if (width < 2 || x.cols() % width != 0) return x;
  const int64_t h = x.cols() / width;
  Mat d(x.rows(), h * (width - 1));
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const Eigen::RowVectorXd row = x.row(r);  // contiguous (x is column-major)
    Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> m(
        row.data(), h, width);
    Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> dm =
        m.rightCols(width - 1) - m.leftCols(width - 1);
    d.row(r) = Eigen::Map<const Eigen::RowVectorXd>(dm.data(), dm.size());
  }
  return d;
}

/// The left null direction of noise-free delta mixtures (the last left singular vector).
Eigen::VectorXd null_direction(const Mat& d) {
  Eigen::SelfAdjointEigenSolver<Mat> es(d * d.transpose());
  return es.eigenvectors().col(0);  // eigenvalues ascending
}

int numerical_rank(const Mat& d) {
  Eigen::SelfAdjointEigenSolver<Mat> es(d * d.transpose());
  const Eigen::VectorXd ev = es.eigenvalues().cwiseMax(0).cwiseSqrt();
  return static_cast<int>((ev.array() > 1e-4 * ev.maxCoeff()).count());
}

/// One item's shape (the shape without its rows).
std::vector<int64_t> item(const Entry& e) {
  return {e.shape.begin() + 1, e.shape.end()};
}

bool field_masked(const Entry& e, const Mat& x) {
  return e.f64 && x.size() > 0 && x.cwiseAbs().maxCoeff() > (1 << 20) &&
         (x.array() == x.array().round()).all();
}

class Auditor {
 public:
  Auditor(const AuditOptions& o, const Captures& c, const Reference* ref, std::ostream& log)
      : o_(o), c_(c), ref_(ref), log_(log), rng_(o.seed) {}

  void run() {
    collect_weights_and_pieces();
    const auto& entries = c_.entries();
    int64_t done = 0, data = 0;
    for (const Entry& e : entries) data += e.kind() != Kind::other && e.capture == 0;
    for (const Entry& e : entries) {
      if (e.kind() == Kind::other || e.capture != 0) continue;
      log_ << fmt::format("audit: tensor {}/{}: {} of layer {}\n", ++done, data, e.type, e.layer)
           << std::flush;
      if (e.kind() == Kind::input)
        input_attacks(e);
      else
        delta_attacks(e);
    }
  }

  nlohmann::json report() const;
  void write_images() const;

 private:
  Tally& tally(const std::string& attack, int64_t layer, const std::string& tensor,
               const std::string& variant = "") {
    return tallies_[Key{attack, layer, tensor, variant}];
  }

  /// Independent Gaussian noise of x's shape, each row with x's row's mean and spread.
  Mat control_like(const Mat& x) {
    std::normal_distribution<double> g;
    Mat y(x.rows(), x.cols());
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      const double mean = x.row(r).mean();
      const double sd = std::sqrt((x.row(r).array() - mean).square().mean());
      for (Eigen::Index k = 0; k < x.cols(); ++k) y(r, k) = mean + sd * g(rng_);
    }
    return y;
  }

  Mat uniform_field_like(const Mat& x) {
    std::uniform_int_distribution<int64_t> u(-(o_.field_prime - 1) / 2, (o_.field_prime - 1) / 2);
    Mat y(x.rows(), x.cols());
    for (Eigen::Index i = 0; i < y.size(); ++i) y.data()[i] = static_cast<double>(u(rng_));
    return y;
  }

  std::vector<int64_t> members(int64_t layer, const Mat& rows) const {
    return ref_ == nullptr ? std::vector<int64_t>{} : ref_->members(layer, rows);
  }

  /// Scores recovered components (rows) against the true inputs `truth` of `layer`: each
  /// true input's best |correlation| with any component. Without true inputs (a masked
  /// view), each component's best |correlation| with any reference input.
  void score(Tally& t, int64_t layer, const std::vector<int64_t>& truth, const Mat& real,
             const Mat& control, const Entry& e) {
    ++t.groups;
    if (ref_ == nullptr) return;
    const Eigen::MatrixXf* r = ref_->inputs(layer, real.cols());
    if (r == nullptr) return;
    const Eigen::MatrixXf ur = unit_rows(real.cast<float>()), uc = unit_rows(control.cast<float>());
    if (truth.empty()) {
      t.scored_by = "each component's best match among all reference inputs";
      for (const auto& [u, out, hit] :
           {std::tuple{&ur, &t.real, &t.real_hit}, std::tuple{&uc, &t.control, &t.control_hit}}) {
        const Eigen::VectorXd b = ref_->best_matches(layer, u->transpose());
        for (double v : b) out->push_back(v), hit->push_back(v >= kRecovered);
      }
      return;
    }
    t.scored_by = "each true input's best match among the recovered components";
    for (int64_t m : truth) {
      const Eigen::VectorXf c = ur * r->row(m).transpose();
      Eigen::Index best;
      const double v = c.cwiseAbs().maxCoeff(&best);
      t.real.push_back(v), t.real_hit.push_back(v >= kRecovered);
      const double vc = (uc * r->row(m).transpose()).cwiseAbs().maxCoeff();
      t.control.push_back(vc), t.control_hit.push_back(vc >= kRecovered);
      if (layer == 0 && e.shape.size() == 4 && t.shown.size() < kShown) {
        Eigen::VectorXd rec = real.row(best).transpose();
        if (c[best] < 0) rec = -rec;
        t.shown.emplace_back(ref_->raw_input(layer, m), rec);
        t.image_shape = e.shape;
      }
    }
  }

  Mat ica(const Mat& x, int n, int64_t width) {
    IcaOptions io;
    io.seed = o_.seed;
    const Mat w = fastica_unmixing(differences(x, width), n, io);
    return w * (x.colwise() - x.rowwise().mean());
  }

  void input_attacks(const Entry& e);
  void delta_attacks(const Entry& e);
  void strip_attacks(const Entry& e, const Entry& fe, const Group& g, const Group& f,
                     const LayerGradient* grad, const Eigen::VectorXd* piece);
  void label_attack(const Entry& e, const Group& g, const Group* first);
  void gradient_attack(const Entry& e, const Group& g, const Group& f,
                       const std::vector<int64_t>& truth, const LayerGradient& grad,
                       const Eigen::VectorXd* piece, const Mat& cd, const Mat& cf);
  void collect_weights_and_pieces();

  const AuditOptions& o_;
  const Captures& c_;
  const Reference* ref_;
  std::ostream& log_;
  std::mt19937_64 rng_;
  std::map<Key, Tally> tallies_;
  std::map<std::pair<std::string, int64_t>, Group> pending_;  // lattice: unpaired single rows
  std::map<int64_t, std::vector<int64_t>> weights_;           // layer -> the weights' shape
  std::map<int64_t, std::vector<Eigen::VectorXd>> pieces_;    // layer -> decoded gradients received
  std::map<std::pair<int64_t, std::string>, size_t> seen_;    // delta groups so far
  int64_t last_ = -1;                                         // the output layer
};

void Auditor::input_attacks(const Entry& e) {
  const int64_t width = e.shape.back();
  const std::vector<Group> groups = c_.groups(e).value();
  for (const Group& g : groups) {
    if (field_masked(e, g.rows)) {
      LatticeOptions lo;
      lo.p = o_.field_prime;
      lo.window = static_cast<int>(std::min<int64_t>(60, g.rows.cols()));
      Group pair = g;
      if (g.rows.rows() == 1) {  // one row per call (Slalom): try pairs of calls
        auto [it, fresh] = pending_.try_emplace({e.type, e.layer}, g);
        if (fresh) continue;
        pair.rows = Mat(2, g.rows.cols());
        pair.rows << it->second.rows, g.rows;
        pending_.erase(it);
      }
      const Mat control = uniform_field_like(pair.rows);
      auto real = lattice_short_vectors(pair.rows, lo);
      auto ctrl = lattice_short_vectors(control, lo);
      if (!real.ok() || !ctrl.ok()) continue;
      score(tally("lattice", e.layer, e.type), e.layer, members(e.layer, pair.rows), real.value(),
            ctrl.value(), e);
      continue;
    }
    if (e.mixtures == 0) continue;  // plaintext (plain mode): nothing to attack
    const std::vector<int64_t> truth = members(e.layer, g.rows);
    const Mat control = control_like(g.rows);
    score(tally("weak_noise", e.layer, e.type), e.layer, truth, g.rows, control, e);
    const int n = static_cast<int>(g.rows.rows());
    if (n >= 2)
      score(tally("ica", e.layer, e.type, "mixtures"), e.layer, truth, ica(g.rows, n, width),
            ica(control, n, width), e);
  }
}

void Auditor::delta_attacks(const Entry& e) {
  if (e.mixtures == 0) return;
  const auto fwd = c_.forward_of(e, e.layer), first = c_.forward_of(e, 0);
  const std::vector<Group> deltas = c_.groups(e).value();
  std::vector<Group> inputs, firsts;
  if (fwd.forward != nullptr) inputs = c_.groups(*fwd.forward).value();
  if (first.forward != nullptr) firsts = c_.groups(*first.forward).value();
  const auto at = [](const std::vector<Group>& gs, int64_t row) -> const Group* {
    for (const Group& g : gs)
      if (g.first_row == row) return &g;
    return nullptr;
  };
  std::optional<LayerGradient> grad;
  if (fwd.forward != nullptr && weights_.count(e.layer) != 0)
    grad = LayerGradient::infer(weights_[e.layer], item(*fwd.forward), item(e));
  for (const Group& g : deltas) {
    const size_t ordinal = seen_[{e.layer, e.type}]++;
    if (e.layer == last_)
      label_attack(e, g, first.forward ? at(firsts, first.first_row + g.first_row) : nullptr);
    const Group* f = fwd.forward ? at(inputs, fwd.first_row + g.first_row) : nullptr;
    if (f == nullptr || f->rows.rows() != g.rows.rows()) continue;
    const auto& pieces = pieces_[e.layer];
    strip_attacks(e, *fwd.forward, g, *f, grad ? &*grad : nullptr,
                  ordinal < pieces.size() ? &pieces[ordinal] : nullptr);
  }
}

void Auditor::strip_attacks(const Entry& e, const Entry& fe, const Group& g, const Group& f,
                            const LayerGradient* grad, const Eigen::VectorXd* piece) {
  const std::vector<int64_t> truth = members(e.layer, f.rows);
  // The deltas' null direction is the forward mixtures' noise direction (folded decode), or
  // Gamma times it (the paper's decode; Gamma then follows from the decoded gradient piece
  // the accelerator receives: a least-squares fit of sum_j gamma_j Eq_j).
  Eigen::VectorXd u = null_direction(g.rows);
  std::string how = "deltas' null direction";
  if (grad != nullptr && piece != nullptr) {
    Mat eq(grad->size(), g.rows.rows());
    for (Eigen::Index j = 0; j < g.rows.rows(); ++j)
      eq.col(j) = (*grad)(f.rows.row(j).transpose(), g.rows.row(j).transpose());
    const Eigen::VectorXd gamma = eq.colPivHouseholderQr().solve(*piece);
    const double residual = (eq * gamma - *piece).norm() / std::max(piece->norm(), 1e-300);
    if (residual < 1e-3 && (gamma.array() != 0).all()) {
      u = u.cwiseQuotient(gamma).normalized();
      how = "deltas' null direction, Gamma fitted to the gradient pieces";
    }
  }
  const Mat stripped = f.rows - u * (u.transpose() * f.rows);
  const Mat cd = control_like(g.rows), cf = control_like(f.rows);
  const Eigen::VectorXd uc = null_direction(cd);
  const Mat cstripped = cf - uc * (uc.transpose() * cf);
  score(tally("noise_strip", e.layer, fe.type, how + " (" + e.type + ")"), e.layer, truth, stripped,
        cstripped, fe);
  const int k = static_cast<int>(g.rows.rows()) - 1;
  const int64_t width = fe.shape.back();
  if (k >= 2)
    score(tally("ica", e.layer, fe.type, "noise-stripped: " + how), e.layer, truth,
          ica(stripped, k, width), ica(cstripped, k, width), fe);
  if (grad != nullptr) gradient_attack(e, g, f, truth, *grad, piece, cd, cf);
}

void Auditor::label_attack(const Entry& e, const Group& g, const Group* first) {
  Tally& t = tally("labels", e.layer, e.type);
  ++t.groups;
  if (ref_ == nullptr || first == nullptr) return;
  std::vector<int> truth;
  for (int64_t m : members(0, first->rows)) truth.push_back(ref_->label(m));
  const int k = numerical_rank(g.rows);
  if (static_cast<int>(truth.size()) != k || std::count(truth.begin(), truth.end(), -1) > 0)
    return;  // the true inputs are not identified one to one: not scored
  t.scored_by =
      "score: the K best-fitting classes against the batch's labels (multiset overlap / K); "
      "recovered: the classes that fit are exactly the batch's label set";
  std::sort(truth.begin(), truth.end());
  std::vector<int> truth_set = truth;
  truth_set.erase(std::unique(truth_set.begin(), truth_set.end()), truth_set.end());
  const Mat control = control_like(g.rows);
  for (const auto& [d, out, hit] : {std::tuple{&g.rows, &t.real, &t.real_hit},
                                    std::tuple{&control, &t.control, &t.control_hit}}) {
    const auto ranked = rank_label_classes(*d);
    std::vector<int> guess;
    for (int j = 0; j < k && j < static_cast<int>(ranked.size()); ++j)
      guess.push_back(ranked[static_cast<size_t>(j)].first);
    std::sort(guess.begin(), guess.end());
    std::vector<int> common, fit;
    std::set_intersection(truth.begin(), truth.end(), guess.begin(), guess.end(),
                          std::back_inserter(common));
    for (const auto& [c, residual] : ranked)
      if (residual < kLabelFit) fit.push_back(c);
    std::sort(fit.begin(), fit.end());
    out->push_back(static_cast<double>(common.size()) / k);
    hit->push_back(fit == truth_set);
  }
}

void Auditor::gradient_attack(const Entry& e, const Group& g, const Group& f,
                              const std::vector<int64_t>& truth, const LayerGradient& grad,
                              const Eigen::VectorXd* piece, const Mat& cd, const Mat& cf) {
  const bool seen = piece != nullptr;
  Tally& t = tally("gradient", e.layer, e.type,
                   seen ? "decoded piece received" : "summed from the mixtures");
  ++t.groups;
  const int k = static_cast<int>(g.rows.rows()) - 1;
  if (ref_ == nullptr || static_cast<int>(truth.size()) != k) return;
  Eigen::VectorXd truth_grad = Eigen::VectorXd::Zero(grad.size());
  for (int64_t m : truth) {
    const Eigen::VectorXd d = ref_->delta(e.layer, m);
    if (d.size() != g.rows.cols()) return;  // the reference holds no deltas
    truth_grad += grad(ref_->raw_input(e.layer, m), d);
  }
  // What the accelerator has: the piece it receives (the paper's decode), or the sum over
  // the virtual batch's mixtures of each mixture's gradient (the folded decode's own
  // backward-weights: that sum is the virtual batch's gradient).
  const auto summed = [&](const Mat& d, const Mat& x) {
    Eigen::VectorXd s = Eigen::VectorXd::Zero(grad.size());
    for (Eigen::Index j = 0; j < d.rows(); ++j)
      s += grad(x.row(j).transpose(), d.row(j).transpose());
    return s;
  };
  const Eigen::VectorXd cand = seen ? *piece : summed(g.rows, f.rows);
  const auto corr = [&](const Eigen::VectorXd& x) {
    const Eigen::VectorXd xc = x.array() - x.mean(), yc = truth_grad.array() - truth_grad.mean();
    return std::abs(xc.dot(yc)) / std::max(xc.norm() * yc.norm(), 1e-300);
  };
  t.scored_by = "|correlation| with the virtual batch's true weight gradient";
  const double v = corr(cand), vc = corr(summed(cd, cf));
  t.real.push_back(v), t.real_hit.push_back(v >= kRecovered);
  t.control.push_back(vc), t.control_hit.push_back(vc >= kRecovered);
  if (v >= kRecovered) t.covered = t.covered < 0 ? k : std::min<int64_t>(t.covered, k);
}

/// The weights' shapes, the output layer, and the decoded weight gradients the accelerator
/// received (the paper's decode uploads one per virtual batch and layer, in pieces of at
/// most a frame: joined here in the order received).
void Auditor::collect_weights_and_pieces() {
  for (const Entry& e : c_.entries()) {
    if (e.capture != 0) continue;
    if (e.type == "weights") weights_[e.layer] = e.shape;
    if (e.kind() == Kind::delta) last_ = std::max(last_, e.layer);
  }
  std::map<int64_t, Eigen::VectorXd> partial;
  for (const Entry& e : c_.entries()) {
    if (e.capture != 0 || e.type != "gradient" || weights_.count(e.layer) == 0) continue;
    int64_t size = 1;
    for (int64_t d : weights_[e.layer]) size *= d;
    const Mat piece = c_.load(e).value();
    Eigen::VectorXd& p = partial[e.layer];
    const Eigen::Index had = p.size();
    p.conservativeResize(had + piece.size());
    p.tail(piece.size()) = piece.reshaped();
    if (p.size() >= size) {
      pieces_[e.layer].push_back(p.head(size));
      p.resize(0);
    }
  }
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

nlohmann::json Auditor::report() const {
  nlohmann::json attacks;
  for (const char* name : {"noise_strip", "ica", "labels", "weak_noise", "lattice", "gradient"})
    attacks[name] = nullptr;
  for (const auto& [key, t] : tallies_) {
    const auto& [attack, layer, tensor, variant] = key;
    nlohmann::json row = {{"layer", layer}, {"tensor", tensor}, {"groups", t.groups}};
    if (!variant.empty()) row["variant"] = variant;
    if (t.real.empty()) {
      row["score"] = nullptr;
    } else {
      row.update({{"score", mean(t.real)},
                  {"chance", mean(t.control)},
                  {"frac_recovered", mean(t.real_hit)},
                  {"chance_frac_recovered", mean(t.control_hit)},
                  {"scored", t.real.size()},
                  {"scored_by", t.scored_by}});
    }
    if (attack == "gradient")
      row["examples_covered"] = t.covered < 0 ? nullptr : nlohmann::json(t.covered);
    nlohmann::json& a = attacks[attack];
    if (a.is_null()) a = {{"per_layer", nlohmann::json::array()}};
    a["per_layer"].push_back(row);
  }
  // The headline: the scored entry of the lowest layer (the model's input where the attack
  // applies), the best variant there.
  for (auto& [name, a] : attacks.items()) {
    if (a.is_null()) continue;
    const nlohmann::json* best = nullptr;
    for (const auto& row : a["per_layer"])
      if (!row["score"].is_null() &&
          (best == nullptr || row["layer"] < (*best)["layer"] ||
           (row["layer"] == (*best)["layer"] && row["score"] > (*best)["score"])))
        best = &row;
    for (const char* f : {"score", "chance", "frac_recovered"})
      a[f] = best == nullptr ? nlohmann::json(nullptr) : (*best)[f];
    if (name == "gradient") {  // the fewest examples any visible gradient covers
      a["examples_covered"] = nullptr;
      for (const auto& row : a["per_layer"])
        if (!row["examples_covered"].is_null() &&
            (a["examples_covered"].is_null() || row["examples_covered"] < a["examples_covered"]))
          a["examples_covered"] = row["examples_covered"];
    }
  }
  return attacks;
}

void Auditor::write_images() const {
  std::filesystem::create_directories(o_.images_dir);
  for (const auto& [key, t] : tallies_) {
    if (t.shown.empty()) continue;
    const auto& [attack, layer, tensor, variant] = key;
    const int h = static_cast<int>(t.image_shape[2]), w = static_cast<int>(t.image_shape[3]);
    std::vector<std::vector<Eigen::VectorXd>> cells(2);
    for (const auto& [orig, rec] : t.shown) {  // the first channel of each
      cells[0].push_back(orig.head(h * w));
      cells[1].push_back(rec.head(h * w));
    }
    std::string name = attack + (variant.empty() ? "" : "-" + variant) + "-" + tensor;
    for (char& ch : name)
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_') ch = '_';
    const auto path = std::filesystem::path(o_.images_dir) / (name + ".png");
    write_png_grid(path.string(), cells, h, w).throw_if_error();
  }
}

}  // namespace

nlohmann::json run_audit(const AuditOptions& o, std::ostream& log) {
  const Captures caps = Captures::open(o.captures).value();
  std::optional<Reference> ref;
  if (!o.reference.empty()) {
    log << "audit: loading the reference " << o.reference << "\n" << std::flush;
    ref = Reference::open(o.reference).value();
  }
  Auditor a(o, caps, ref ? &*ref : nullptr, log);
  a.run();
  if (!o.images_dir.empty()) a.write_images();
  return {{"captures", o.captures},
          {"reference", ref ? nlohmann::json(ref->description()) : nlohmann::json(nullptr)},
          {"recovered_at", kRecovered},
          {"attacks", a.report()}};
}

std::string summary_table(const nlohmann::json& report) {
  const auto num = [](const nlohmann::json& v) {
    return v.is_null() ? std::string("-") : fmt::format("{:.3f}", v.get<double>());
  };
  std::string out = fmt::format("{:<12} {:>7} {:>7} {:>10}   per layer (score/chance)\n", "attack",
                                "score", "chance", "recovered");
  for (const auto& [name, a] : report["attacks"].items()) {
    if (a.is_null()) {
      out += fmt::format("{:<12} does not apply to this capture\n", name);
      continue;
    }
    std::string layers;
    for (const auto& row : a["per_layer"])
      layers += fmt::format(
          "  L{}{}: {}/{}", row["layer"].get<int64_t>(),
          row.contains("variant") && row["variant"].get<std::string>().find("noise-stripped") == 0
              ? "s"
              : "",
          num(row["score"]), num(row.value("chance", nlohmann::json())));
    out += fmt::format("{:<12} {:>7} {:>7} {:>10} {}\n", name, num(a["score"]), num(a["chance"]),
                       num(a["frac_recovered"]), layers);
  }
  return out;
}

}  // namespace darknight::audit
