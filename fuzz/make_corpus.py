#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/): a few small valid
inputs of each parser and a few near-valid ones (one field wrong). Deterministic; run it
again after a format changes:  /usr/bin/python3 fuzz/make_corpus.py
Needs Debian's python3-onnx, python3-numpy and python3-pil (for the JPEG seeds). Each
target's input layout is described at the top of its fuzz/fuzz_<target>.cpp."""
import gzip
import io
import json
import os
import shutil
import struct
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "corpus")
rng = np.random.default_rng(7)


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def weights(name, *shape):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def model(nodes, inits, in_shape, out_name, opset=13):
    g = helper.make_graph(
        nodes, "fuzz_seed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    return m.SerializeToString()


def onnx_models():
    for f in ["matmul_cnn_opset13.onnx", "train_cnn.onnx"]:
        shutil.copy(os.path.join(ROOT, "tests/fixtures/onnx", f), os.path.join(OUT, "onnx_model", f))
    # Conv (pads, strides, dilations, group), pools with auto_pad, Gemm.
    cnn = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1],
                         strides=[1, 1], dilations=[1, 1], kernel_shape=[3, 3], group=1),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], "pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], "dw", group=4, auto_pad="SAME_UPPER"),
        helper.make_node("AveragePool", ["c2"], ["p2"], "pool2", kernel_shape=[2, 2],
                         auto_pad="SAME_LOWER", count_include_pad=1),
        helper.make_node("GlobalAveragePool", ["p2"], ["g"], "gap"),
        helper.make_node("Flatten", ["g"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], "fc", transB=1),
    ]
    inits = [weights("w1", 4, 3, 3, 3), weights("b1", 4), weights("w2", 4, 1, 3, 3),
             weights("w3", 5, 4), weights("b3", 5)]
    write("onnx_model", "cnn.onnx", model(cnn, inits, [3, 8, 8], "y"))
    # The case: a Conv with pads=[1] (one value for four), refused.
    bad = [helper.make_node("Conv", ["x", "w1"], ["y"], "conv1", pads=[1])]
    write("onnx_model", "conv_pads1.onnx", model(bad, [weights("w1", 2, 3, 3, 3)], [3, 8, 8], "y"))
    # Folded shape arithmetic, Constant, Pad (opset 13: inputs), Clip, BN, Add, Softmax.
    shp = [
        helper.make_node("Pad", ["x", "pads", "zero"], ["pd"], "pad"),
        helper.make_node("BatchNormalization", ["pd", "s", "bb", "m", "v"], ["bn"], "bn"),
        helper.make_node("Add", ["bn", "shift"], ["a"], "add"),
        helper.make_node("Clip", ["a", "lo", "hi"], ["cl"], "clip"),
        helper.make_node("Identity", ["cl"], ["id"], "identity"),
        helper.make_node("Shape", ["id"], ["sh"], "shape"),
        helper.make_node("Constant", [], ["i0"], "c0", value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["sh", "i0"], ["n"], "gather"),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], "unsq"),
        helper.make_node("Constant", [], ["m1"], "c1", value_ints=[-1]),
        helper.make_node("Concat", ["n1", "m1"], ["target"], "concat", axis=0),
        helper.make_node("Reshape", ["id", "target"], ["flat"], "reshape"),
        helper.make_node("MatMul", ["flat", "w"], ["mm"], "matmul"),
        helper.make_node("Dropout", ["mm"], ["dr"], "drop"),
        helper.make_node("Softmax", ["dr"], ["y"], "softmax", axis=-1),
    ]
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    f32 = lambda name, v: numpy_helper.from_array(np.array(v, np.float32), name)
    inits = [i64("pads", [0, 0, 1, 1, 0, 0, 1, 1]), f32("zero", 0.0), f32("s", [1, 2]),
             f32("bb", [0, 1]), f32("m", [0, 0]), f32("v", [1, 1]), f32("shift", [[[0.5]], [[1]]]),
             f32("lo", 0.0), f32("hi", 6.0), i64("axes", [0]), weights("w", 2 * 6 * 6, 3)]
    write("onnx_model", "shape_ops.onnx", model(shp, inits, [2, 4, 4], "y"))
    # Opset 9 forms: Clip and Pad with attributes.
    old = [
        helper.make_node("Pad", ["x"], ["pd"], "pad", pads=[0, 0, 1, 0, 0, 0, 0, 1], value=0.0),
        helper.make_node("Clip", ["pd"], ["cl"], "clip", min=0.0, max=6.0),
        helper.make_node("Flatten", ["cl"], ["f"], "flatten"),
        helper.make_node("Softmax", ["f"], ["y"], "softmax", axis=1),
    ]
    write("onnx_model", "opset9.onnx", model(old, [], [1, 3, 3], "y", opset=9))


def onnx_tensors():
    for f in ["matmul_cnn_output.pb", "residual_cnn_output.pb", "train_cnn_labels.pb",
              "train_cnn_loss.pb", "train_cnn_after_step.pb"]:
        shutil.copy(os.path.join(ROOT, "tests/fixtures/onnx", f), os.path.join(OUT, "onnx_tensor", f))
    t = helper.make_tensor("typed_float", TensorProto.FLOAT, [2, 3], [1, 2, 3, 4, 5, 6])
    write("onnx_tensor", "typed_float.pb", t.SerializeToString())
    t = helper.make_tensor("typed_double", TensorProto.DOUBLE, [3], [0.5, -1, 2])
    write("onnx_tensor", "typed_double.pb", t.SerializeToString())
    t = numpy_helper.from_array(np.arange(6, dtype=np.float64).reshape(2, 3), "raw_double")
    write("onnx_tensor", "raw_double.pb", t.SerializeToString())
    t = numpy_helper.from_array(np.array([1, -1, 7], np.int32), "raw_int32")
    write("onnx_tensor", "raw_int32.pb", t.SerializeToString())
    t = helper.make_tensor("typed_int64", TensorProto.INT64, [2], [1, -1])
    write("onnx_tensor", "typed_int64.pb", t.SerializeToString())
    # Near-valid: 2^40 elements declared, 4 bytes of data.
    t = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20],
                    raw_data=b"\0\0\0\0")
    write("onnx_tensor", "huge_dims.pb", t.SerializeToString())


def idx_file(magic, dims, payload):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def idx_input(images, labels):
    return struct.pack("<H", len(labels)) + labels + images


def idx():
    imgs = idx_file(0x803, [3, 4, 4], bytes(range(48)))
    labs = idx_file(0x801, [3], bytes([0, 9, 4]))
    write("idx", "valid.bin", idx_input(imgs, labs))
    write("idx", "count_mismatch.bin", idx_input(idx_file(0x803, [4, 4, 4], bytes(48)), labs))
    write("idx", "bad_label.bin", idx_input(imgs, idx_file(0x801, [3], bytes([0, 10, 4]))))
    return imgs, labs


def cifar():
    rec10 = lambda label: bytes([label]) + bytes(rng.integers(0, 256, 3072, dtype=np.uint8))
    write("cifar", "cifar10.bin", b"\0" + rec10(3) + rec10(9))
    rec100 = lambda c, f: bytes([c, f]) + bytes(rng.integers(0, 256, 3072, dtype=np.uint8))
    write("cifar", "cifar100.bin", b"\1" + rec100(4, 99))
    write("cifar", "cifar10_bad_label.bin", b"\0" + rec10(10))
    write("cifar", "cifar10_short.bin", b"\0" + rec10(1)[:3000])


def gz(data):
    return gzip.compress(data, mtime=0)


def gzip_seeds(imgs, labs):
    write("gzip", "idx_images.gz", gz(imgs))
    write("gzip", "idx_labels.gz", gz(labs))
    write("gzip", "text.gz", gz(b"DarKnight " * 50))
    write("gzip", "zeros.gz", gz(bytes(100000)))  # 100 kB from a few hundred bytes
    write("gzip", "truncated.gz", gz(b"hello world " * 10)[:-6])


def jpeg():
    img = Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8), "RGB")
    for name, kw in [("baseline.jpg", {}), ("progressive.jpg", {"progressive": True}),
                     ("q20_420.jpg", {"quality": 20, "subsampling": 2})]:
        b = io.BytesIO()
        img.save(b, "JPEG", **kw)
        write("jpeg", name, b.getvalue())
    b = io.BytesIO()
    img.convert("L").resize((8, 8)).save(b, "JPEG")
    write("jpeg", "gray.jpg", b.getvalue())


def sealed():
    def header(count, chunk, plain):
        return (b"DKSEALD1" + bytes(range(16)) + bytes(32 * 3) +
                struct.pack("<QQQ", count, chunk, plain))
    write("sealed", "header.bin", header(2, 64, 100) + bytes(2 * 40 + 100))
    write("sealed", "header_inconsistent.bin", header(3, 64, 100))

    def split(kind, fmt, name, classes, dims, labels, pixels):
        b = struct.pack("<BBH", kind, fmt, len(name)) + name + struct.pack("<I", classes)
        b += b"".join(struct.pack("<Q", d) for d in dims)
        b += struct.pack("<B", 1 if labels is not None else 0)
        if labels is not None:
            b += b"".join(struct.pack("<I", l) for l in labels)
        return b + pixels

    u8 = split(0, 0, b"toy", 3, [2, 1, 2, 2], [0, 2], bytes(range(8)))
    f32 = split(1, 1, b"toy", 3, [1, 1, 2, 2], None, np.arange(4, dtype="<f4").tobytes())
    write("sealed", "payload_train.bin", b"DKDATA01" + struct.pack("<I", 1) + u8)
    write("sealed", "payload_both.bin", b"DKDATA01" + struct.pack("<I", 2) + u8 + f32)
    write("sealed", "payload_bad_label.bin", b"DKDATA01" + struct.pack("<I", 1) +
          split(0, 0, b"toy", 3, [1, 1, 1, 1], [3], b"\x07"))


TYPES = {"hello": 1, "alloc": 3, "view": 4, "upload": 6, "conv2d_forward": 16,
         "dense_forward": 19, "ok": 100, "error": 101}


def wire_input(frames):
    head = frames[0]
    return struct.pack("<BH", len(frames), len(head)) + b"".join(frames)


def message(kind, seq, ints=(), reals=()):
    return (struct.pack("<IHHQII", 0x574B4144, 1, TYPES[kind], seq, len(ints), len(reals)) +
            b"".join(struct.pack("<q", i) for i in ints) +
            b"".join(struct.pack("<d", r) for r in reals))


def wire():
    write("wire", "hello.bin", wire_input([message("hello", 1, [1, 5])]))
    write("wire", "alloc.bin", wire_input([message("alloc", 2, [7, 0, 4, 2, 3, 8, 8])]))
    write("wire", "view.bin", wire_input([message("view", 3, [8, 7, 64, 2, 3, 8])]))
    conv = [0, 3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1]  # layer, then the 13 fields
    write("wire", "conv.bin", wire_input([message("conv2d_forward", 4, conv + [4, 2, 3, 8, 8])]))
    write("wire", "dense.bin", wire_input([message("dense_forward", 5, [1, 12, 4, 2, 2, 12])]))
    write("wire", "upload.bin", wire_input([message("upload", 6, [7, 0]), bytes(16)]))
    write("wire", "error.bin", wire_input([message("error", 6), b"upload: no such buffer"]))
    write("wire", "sgd_reals.bin", wire_input([message("ok", 9, [1, 2], [0.1, 0.9])]))
    write("wire", "conv_overflow.bin", wire_input([message(
        "conv2d_forward", 4, [0, 1, 1, 1 << 32, 1, 1, 1, 1 << 32, 0, 1 << 32, 0, 1 << 32, 1, 1,
                              4, 1, 1, 8, 8])]))


def model_file():
    tensors = [("conv.weight", [2, 1, 3, 3]), ("conv.bias", [2]), ("bn.weight", [2]),
               ("bn.bias", [2]), ("bn.running_mean", [2]), ("bn.running_var", [2]),
               ("fc.weight", [3, 8]), ("fc.bias", [3])]

    def file(entries, meta):
        header, data = {"meta": meta, "tensors": []}, b""
        for name, shape in entries:
            header["tensors"].append({"name": name, "shape": shape, "offset": len(data)})
            data += rng.standard_normal(int(np.prod(shape))).astype("<f4").tobytes()
        h = json.dumps(header, separators=(",", ":")).encode()
        return b"DKMODEL\0" + struct.pack("<IQ", 1, len(h)) + h + data  # no CRC: the target adds it

    write("model_file", "tiny.dkm", file(tensors, {"model": "tiny", "epoch": 1}))
    write("model_file", "missing_bias.dkm", file(tensors[:-1], {}))
    write("model_file", "wrong_shape.dkm", file([(n, [5] if n == "bn.bias" else s) for n, s in tensors], {}))


def npy():
    def save(name, a):
        buf = io.BytesIO()
        np.save(buf, a)
        write("npy", name, buf.getvalue())
    r = np.random.default_rng(17)  # its own generator: the seeds do not depend on the others
    save("f4.npy", r.standard_normal((5, 1, 4, 4)).astype("<f4"))
    save("f8.npy", np.round(r.uniform(-2**30, 2**30, (1, 3, 8))).astype("<f8"))
    big = io.BytesIO()
    np.save(big, np.zeros((2, 3), "<f4"))
    write("npy", "declares_2p40.npy", big.getvalue().replace(b"(2, 3)", b"(1099511627776, 1)"))


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    for t in ["onnx_model", "onnx_tensor"]:
        os.makedirs(os.path.join(OUT, t))
    onnx_models()
    onnx_tensors()
    imgs, labs = idx()
    cifar()
    gzip_seeds(imgs, labs)
    jpeg()
    sealed()
    wire()
    model_file()
    npy()
    for t in sorted(os.listdir(OUT)):
        files = os.listdir(os.path.join(OUT, t))
        size = sum(os.path.getsize(os.path.join(OUT, t, f)) for f in files)
        print(f"{t}: {len(files)} seeds, {size} bytes")


if __name__ == "__main__":
    main()
