#include "audit/reference.h"

#include <fmt/format.h>

#include <filesystem>

#include "audit/capture.h"
#include "data/datasets.h"

namespace darknight::audit {

Eigen::MatrixXf unit_rows(const Eigen::MatrixXf& x) {
  Eigen::MatrixXf u = x.colwise() - x.rowwise().mean();
  const Eigen::VectorXf n = u.rowwise().norm();
  for (Eigen::Index i = 0; i < u.rows(); ++i)
    if (n[i] > 0) u.row(i) /= n[i];
  return u;
}

void Reference::add_inputs(int64_t layer, const Eigen::MatrixXf& rows) {
  Eigen::MatrixXf& r = raw_[layer];
  Eigen::MatrixXf both(r.rows() + rows.rows(), rows.cols());
  if (r.rows() > 0) both.topRows(r.rows()) = r;
  both.bottomRows(rows.rows()) = rows;
  r = std::move(both);
}

Result<Reference> Reference::open(const std::string& spec) {
  Reference ref;
  if (std::filesystem::exists(std::filesystem::path(spec) / "index.jsonl")) {
    auto caps = Captures::open({spec});
    if (!caps.ok()) return caps.status();
    const Captures& c = caps.value();
    std::map<const Entry*, int64_t> offset;  // forward tensor -> its first row in raw_
    for (const Entry& e : c.entries()) {
      if (e.kind() != Kind::input) continue;
      if (e.mixtures != 0)
        return Status::error(spec + ": a reference capture must be of plain mode");
      auto m = c.load(e);
      if (!m.ok()) return m.status();
      offset[&e] = ref.raw_[e.layer].rows();
      ref.add_inputs(e.layer, m.value().cast<float>());
    }
    int64_t last = -1;  // the output layer: the deepest with deltas
    for (const Entry& e : c.entries())
      if (e.kind() == Kind::delta) last = std::max(last, e.layer);
    ref.labels_.assign(ref.raw_.count(0) ? ref.raw_[0].rows() : 0, -1);
    for (const Entry& e : c.entries()) {
      if (e.kind() != Kind::delta) continue;
      const auto fwd = c.forward_of(e, e.layer);
      auto m = c.load(e);
      if (!m.ok()) return m.status();
      if (fwd.forward != nullptr) {
        Eigen::MatrixXf& d = ref.deltas_[e.layer];
        if (d.rows() == 0) d = Eigen::MatrixXf::Zero(ref.raw_[e.layer].rows(), m.value().cols());
        d.middleRows(offset[fwd.forward] + fwd.first_row, m.value().rows()) =
            m.value().cast<float>();
      }
      const auto first = c.forward_of(e, 0);
      if (e.layer == last && first.forward != nullptr)
        for (Eigen::Index i = 0; i < m.value().rows(); ++i) {
          Eigen::Index y;
          m.value().row(i).minCoeff(&y);  // softmax - onehot: the label's entry is negative
          ref.labels_[offset[first.forward] + first.first_row + i] = static_cast<int>(y);
        }
    }
    ref.description_ = "plain capture " + spec;
  } else {
    for (const data::Split split : {data::Split::train, data::Split::test}) {
      data::LoadOptions o;
      o.split = split;
      auto d = data::load(spec, o);
      if (!d.ok()) return d.status();
      const Tensor& t = d.value().images;
      const int64_t n = t.shape()[0], w = t.numel() / std::max<int64_t>(n, 1);
      ref.add_inputs(
          0,
          Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
              t.data(), n, w));
      for (int y : d.value().labels) ref.labels_.push_back(y);
      ref.labels_.resize(ref.raw_[0].rows(), -1);
    }
    ref.description_ = "dataset " + spec + " (train and test)";
  }
  for (const auto& [layer, rows] : ref.raw_) ref.unit_[layer] = unit_rows(rows);
  return ref;
}

const Eigen::MatrixXf* Reference::inputs(int64_t layer, int64_t width) const {
  const auto it = unit_.find(layer);
  return it == unit_.end() || it->second.cols() != width ? nullptr : &it->second;
}

std::vector<int64_t> Reference::members(int64_t layer, const Eigen::MatrixXd& rows) const {
  const Eigen::MatrixXf* ref = inputs(layer, rows.cols());
  if (ref == nullptr) return {};
  Eigen::MatrixXd a(rows.cols(), rows.rows() + 1);
  a.leftCols(rows.rows()) = rows.transpose();
  a.col(rows.rows()).setOnes();
  Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(a);
  qr.setThreshold(1e-7);
  const Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(a.rows(), qr.rank());
  // The unit rows are centred; the constant is in the span, so the residual of a unit row
  // is its relative residual.
  const Eigen::MatrixXf proj = *ref * q.cast<float>();
  std::vector<int64_t> out;
  for (Eigen::Index i = 0; i < ref->rows(); ++i) {
    const double res = 1.0 - static_cast<double>(proj.row(i).squaredNorm());
    if (res < kMemberTolerance * kMemberTolerance) out.push_back(i);
  }
  return out;
}

Eigen::VectorXd Reference::best_matches(int64_t layer, const Eigen::MatrixXf& components) const {
  const Eigen::MatrixXf* ref = inputs(layer, components.rows());
  if (ref == nullptr) return {};
  return (*ref * components).cwiseAbs().colwise().maxCoeff().transpose().cast<double>();
}

int Reference::label(int64_t i) const {
  return i >= 0 && i < static_cast<int64_t>(labels_.size()) ? labels_[static_cast<size_t>(i)] : -1;
}

Eigen::VectorXd Reference::delta(int64_t layer, int64_t i) const {
  const auto it = deltas_.find(layer);
  if (it == deltas_.end() || i >= it->second.rows()) return {};
  return it->second.row(i).transpose().cast<double>();
}

Eigen::VectorXd Reference::raw_input(int64_t layer, int64_t i) const {
  return raw_.at(layer).row(i).transpose().cast<double>();
}

}  // namespace darknight::audit
