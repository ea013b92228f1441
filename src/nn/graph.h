// A model as a graph of layers: the linear ones (conv, dense) run on the accelerator, the
// rest in the trusted runtime. Nodes are kept in topological order; node i produces value i.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "accel/backend.h"
#include "protocol/tensor.h"

namespace darknight::nn {

enum class Op {
  input,
  conv,
  dense,
  relu,
  clip,  ///< min/max (ReLU6 is clip 0..6)
  max_pool,
  avg_pool,
  global_avg_pool,
  batch_norm,  ///< inference: per-channel scale and shift
  flatten,
  reshape,  ///< same elements, another item shape (Node::shape)
  pad,      ///< constant padding of H and W
  add,
  softmax,
  identity,  ///< Dropout/Identity at inference
};
const char* op_name(Op op);

enum class Act { none, relu, clip };

/// What follows a linear op's decode, fused into it: y = act(scale[c] * z + shift[c]) with
/// c the channel of the element (bias and inference batch norm fold into scale/shift).
struct Epilogue {
  Tensor scale;  ///< [C] or empty (1)
  Tensor shift;  ///< [C] or empty (0)
  Act act = Act::none;
  float lo = 0, hi = 0;  ///< clip bounds
  int64_t inner = 1;     ///< elements per channel within an item (H*W for conv, 1 for dense)

  bool empty() const { return scale.empty() && shift.empty() && act == Act::none; }
  /// Applies to elements [begin, end) of one item's data.
  void apply(float* item, int64_t begin, int64_t end) const;
  std::string str() const;
};

struct PoolDesc {
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  bool ceil_mode = false;
  bool count_include_pad = false;            ///< average pooling: divide by the full window
  Shape dst_shape(const Shape& item) const;  ///< [C, H, W] -> [C, OH, OW]
};

/// A batch norm's parameters and running statistics (PyTorch semantics: running_var is
/// updated with the unbiased batch variance; momentum weighs the new batch).
struct BatchNormParams {
  Tensor gamma, beta, mean, var;
  double eps = 1e-5;
  double momentum = 0.1;
  bool present() const { return !gamma.empty(); }
};

struct Node {
  Op op = Op::identity;
  std::string name;    ///< grows with what fusion merges into it ("conv1+relu1")
  std::string origin;  ///< the name the node was built with, kept through fusion
  std::vector<int> inputs;
  Shape shape;  ///< output shape of one item (no batch dimension)

  accel::ConvDesc conv;
  accel::DenseDesc dense;
  int weights = -1;   ///< index into Graph::weights() (conv, dense)
  Epilogue epilogue;  ///< conv, dense

  PoolDesc pool;                  ///< max_pool, avg_pool
  std::array<int64_t, 4> pads{};  ///< pad: top, left, bottom, right
  float pad_value = 0;            ///< pad
  float lo = 0, hi = 0;           ///< clip
  Tensor scale, shift;            ///< batch_norm: y = scale[c] x + shift[c]
  BatchNormParams bn;             ///< batch_norm from a real batch norm (trainable)

  bool is_linear() const { return op == Op::conv || op == Op::dense; }
};

class Graph {
 public:
  /// The input value (id 0); `item` is the shape of one input, e.g. [3, 224, 224].
  explicit Graph(const Shape& item);

  Graph(Graph&&) noexcept = default;
  Graph& operator=(Graph&&) noexcept = default;
  /// A deep copy, weights included.
  Graph clone() const;

  /// Appends a node, inferring and checking its output shape; returns its value id.
  /// Throws Error naming the node when its inputs do not fit.
  int add(Node node);
  /// Registers a linear layer's weights; returns their index.
  int add_weights(Tensor weights);

  int conv(int x, accel::ConvDesc d, Tensor weights, Tensor bias, const std::string& name);
  int dense(int x, int64_t out, Tensor weights, Tensor bias, const std::string& name);
  int unary(Op op, int x, const std::string& name);
  int clip(int x, float lo, float hi, const std::string& name);
  int pool(Op op, int x, PoolDesc p, const std::string& name);
  /// A fixed per-channel affine map (e.g. a constant added by an ONNX Add).
  int batch_norm(int x, Tensor scale, Tensor shift, const std::string& name);
  /// A batch norm with its parameters and running statistics.
  int batch_norm(int x, BatchNormParams params, const std::string& name);
  int reshape(int x, const Shape& item, const std::string& name);
  int pad(int x, std::array<int64_t, 4> pads, float value, const std::string& name);
  int add_values(int a, int b, const std::string& name);

  void set_output(int id);
  int output() const { return output_; }
  const Shape& input_shape() const { return nodes_[0].shape; }
  const Shape& output_shape() const { return nodes_[static_cast<size_t>(output_)].shape; }
  const std::vector<Node>& nodes() const { return nodes_; }
  const Node& node(int id) const { return nodes_[static_cast<size_t>(id)]; }
  /// For training: the trainable parameters (biases, batch norms) change in place.
  Node& mutable_node(int id) { return nodes_[static_cast<size_t>(id)]; }

  /// The linear layers' weights. The host moves them to their holder (the accelerator, or
  /// the trusted runtime in `tee` mode) before running; the graph keeps only their shapes.
  std::vector<Tensor>& weights() { return weights_; }
  const std::vector<Shape>& weight_shapes() const { return weight_shapes_; }
  int64_t weight_bytes() const;
  int64_t linear_layers() const;
  /// Multiply-adds of one forward pass of one item.
  int64_t macs() const;

  /// Merges batch norm and activations that directly follow a linear node (its only
  /// consumer) into the node's epilogue, and drops identity nodes. For training, batch
  /// norms with statistics stay separate (they are computed over the batch).
  void fuse(bool training = false);
  /// Per node, the last node that reads its value (the output: nodes().size()).
  std::vector<int> last_uses() const;
  std::string summary() const;

 private:
  std::vector<Node> nodes_;
  std::vector<Tensor> weights_;
  std::vector<Shape> weight_shapes_;
  int output_ = 0;
};

/// Recomputes a batch norm node's inference affine map (scale, shift) from its parameters
/// and running statistics.
void refresh_batch_norm(Node& n);

}  // namespace darknight::nn
