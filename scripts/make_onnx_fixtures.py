#!/usr/bin/python3
"""Makes the ONNX fixtures of tests/fixtures/onnx with Debian's PyTorch (python3-torch).

Two small CNNs with random weights and batch-norm statistics, exported with
torch.onnx.export at several opsets, plus a batch of inputs and PyTorch's outputs as ONNX
TensorProto files. Run: /usr/bin/python3 scripts/make_onnx_fixtures.py
"""
import os

import numpy as np
import onnx
import onnx.numpy_helper
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "onnx")


class ResidualCnn(nn.Module):
    """Conv+BN+ReLU, MaxPool, depthwise conv + BN + ReLU6 (Clip), pointwise conv, residual
    Add, ReLU then BN (a BatchNormalization node the exporter cannot fold into a conv),
    AvgPool (exported as Pad + AveragePool), x.view(x.size(0), -1)
    (Shape/Gather/Unsqueeze/Concat/Reshape), Linear (Gemm), Dropout, Softmax."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.skip = nn.Conv2d(8, 16, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.avg = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        y = self.pw(F.relu6(self.bn2(self.dw(x))))
        x = self.avg(self.bn3(F.relu(y + self.skip(x))))
        x = x.view(x.size(0), -1)
        x = self.drop(F.relu(self.fc1(x)))
        return F.softmax(self.fc2(x), dim=1)


class MatMulCnn(nn.Module):
    """Strided conv with asymmetric-looking padding, AvgPool counting padding,
    GlobalAveragePool, torch.flatten (Flatten), x @ W + b (MatMul + Add)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, (3, 5), stride=2, padding=(1, 2))
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.w = nn.Parameter(torch.randn(12, 7) * 0.3)
        self.b = nn.Parameter(torch.randn(7) * 0.1)

    def forward(self, x):
        x = self.gap(self.avg(F.relu(self.conv(x))))
        return torch.flatten(x, 1) @ self.w + self.b


class TrainCnn(nn.Module):
    """For the one-step training test: conv, ReLU then batch norm (kept as a node), max
    pool, grouped conv, ReLU6, a residual 1x1 conv, average pool, view, linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, groups=2)
        self.skip = nn.Conv2d(6, 6, 1)
        self.avg = nn.AvgPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(self.bn1(F.relu(self.conv1(x))))
        x = self.avg(F.relu6(self.conv2(x)) + self.skip(x))
        return self.fc(x.view(x.size(0), -1))


def train_fixture():
    """The model before and after one SGD step on a batch, and its outputs after it."""
    torch.manual_seed(7)
    m = TrainCnn()
    randomise_bn(m)
    x = torch.rand(8, 3, 16, 16)
    labels = torch.randint(0, 10, (8,))
    m.eval()
    torch.onnx.export(m, x, os.path.join(OUT, "train_cnn.onnx"), input_names=["input"],
                      output_names=["output"], opset_version=13,
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    loss = F.cross_entropy(m(x), labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    m.eval()
    with torch.no_grad():
        after = m(x)
    save_tensor(x.numpy(), os.path.join(OUT, "train_cnn_input.pb"))
    save_tensor(labels.numpy().astype(np.int64), os.path.join(OUT, "train_cnn_labels.pb"))
    save_tensor(np.array([loss.item()], dtype=np.float32), os.path.join(OUT, "train_cnn_loss.pb"))
    save_tensor(after.numpy(), os.path.join(OUT, "train_cnn_after_step.pb"))


def randomise_bn(m):
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)


def save_tensor(array, path):
    with open(path, "wb") as f:
        f.write(onnx.numpy_helper.from_array(np.ascontiguousarray(array)).SerializeToString())


def export(model, name, opsets, shape):
    model.eval()
    x = torch.rand(*shape)
    with torch.no_grad():
        y = model(x)
    for opset in opsets:
        torch.onnx.export(model, x, os.path.join(OUT, f"{name}_opset{opset}.onnx"),
                          input_names=["input"], output_names=["output"], opset_version=opset,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    save_tensor(x.numpy(), os.path.join(OUT, f"{name}_input.pb"))
    save_tensor(y.numpy(), os.path.join(OUT, f"{name}_output.pb"))


def main():
    torch.manual_seed(2024)
    os.makedirs(OUT, exist_ok=True)
    m = ResidualCnn()
    randomise_bn(m)
    export(m, "residual_cnn", [11, 13, 17], (12, 3, 16, 16))
    export(MatMulCnn(), "matmul_cnn", [13], (6, 3, 15, 14))
    train_fixture()


if __name__ == "__main__":
    main()
