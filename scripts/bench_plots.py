#!/usr/bin/python3
"""Tables (tables.md) and plots (PNG) from `darknight bench --out DIR` results.

  bench_plots.py DIR

Figures, by the `figure` field of the problems (labels as in bench/problems/*.txt):
  fig2a  darknight inference per-operation time per image for each K, relative to K = 1,
         and peak trusted memory;
  fig2b  inference time per image of each MODEL/MODE, speedup relative to MODEL/tee;
  fig4   training forward and backward per-operation time per image of each MODEL/MODE;
  fig3   test accuracy per epoch of each training run;
  table2 inference accuracy of each setting.
Times are medians over the runs, with the [min, max] spread.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OPS = ["encode", "accelerator", "decode", "nonlinear"]


def med(p, key):
    s = p["summary"].get(key)
    return s["median"] if s else None


def spread(p, key):
    s = p["summary"].get(key)
    return f"[{s['min'] * 1e3:.1f}, {s['max'] * 1e3:.1f}]" if s else "-"


def fig2a(ps, out, md):
    ps = [p for p in ps if med(p, "per_image.seconds")]
    if not ps:
        return
    base = med(ps[0], "per_image.seconds")
    md.append("## Figure 2a: darknight inference per operation, by K\n")
    md.append(f"Command: `{ps[0]['command']}` with -k K.\n")
    md.append("| K | ms/image [min, max] | vs K = 1 | encode | accelerator | decode | non-linear "
              "| peak trusted MiB |")
    md.append("|---|---|---|---|---|---|---|---|")
    fig, ax = plt.subplots(figsize=(6, 4))
    bottom = [0.0] * len(ps)
    labels = [p["label"] for p in ps]
    for op in OPS:
        vals = [(med(p, f"per_image.{op}") or 0) / base for p in ps]
        ax.bar(labels, vals, bottom=bottom, label=op)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("time per image, relative to K = 1 total")
    ax2 = ax.twinx()
    ax2.plot(labels, [med(p, "peak_trusted_bytes") / 2**20 for p in ps], "k.-",
             label="peak trusted MiB")
    ax2.set_ylabel("peak trusted memory (MiB)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Figure 2a: per-operation time vs K")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig2a.png"), dpi=120)
    for p in ps:
        t = med(p, "per_image.seconds")
        ops = " | ".join(f"{(med(p, f'per_image.{op}') or 0) / t * 100:.0f}%" for op in OPS)
        md.append(f"| {p['label']} | {t * 1e3:.2f} {spread(p, 'per_image.seconds')} | "
                  f"{t / base:.2f} | {ops} | {med(p, 'peak_trusted_bytes') / 2**20:.1f} |")
    md.append("")


def fig2b(ps, out, md):
    models = sorted({p["label"].split("/")[0] for p in ps})
    md.append("## Figure 2b: inference time per image, speedup relative to tee\n")
    md.append("| model | mode | ms/image [min, max] | speedup vs tee | time vs plain |")
    md.append("|---|---|---|---|---|")
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [p for p in ps if p["label"].split("/")[0] == model and med(p, "per_image.seconds")]
        get = {p["label"].split("/", 1)[1]: med(p, "per_image.seconds") for p in mine}
        tee, plain = get.get("tee"), get.get("plain")
        for p in mine:
            mode = p["label"].split("/", 1)[1]
            t = get[mode]
            md.append(f"| {model} | {mode} | {t * 1e3:.2f} {spread(p, 'per_image.seconds')} | "
                      f"{tee / t:.2f}x | {t / plain:.2f}x |" if tee and plain else
                      f"| {model} | {mode} | {t * 1e3:.2f} | - | - |")
        modes = [p["label"].split("/", 1)[1] for p in mine]
        speed = [tee / get[m] if tee else 0 for m in modes]
        ax.bar(modes, speed)
        ax.set_title(f"{model}: speedup vs tee")
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        ax.axhline(1, color="k", lw=0.5)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig2b.png"), dpi=120)
    md.append("")


def fig4(ps, out, md):
    md.append("## Figure 4: training per-operation time per image (ms)\n")
    md.append("| model/mode | forward: encode / accelerator / decode / non-linear | backward: "
              "encode / accelerator / decode / non-linear | total train ms/image |")
    md.append("|---|---|---|---|")
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [p["label"] for p in ps]
    bottom = [0.0] * len(ps)
    for phase in ("forward", "backward"):
        for op in OPS:
            vals = [(med(p, f"per_image.{phase}.{op}") or 0) * 1e3 for p in ps]
            ax.bar(labels, vals, bottom=bottom, label=f"{phase} {op}")
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("ms per image")
    ax.legend(fontsize=6, ncol=2)
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    ax.set_title("Figure 4: training forward and backward per operation")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig4.png"), dpi=120)
    for p in ps:
        f = " / ".join(f"{(med(p, f'per_image.forward.{op}') or 0) * 1e3:.2f}" for op in OPS)
        b = " / ".join(f"{(med(p, f'per_image.backward.{op}') or 0) * 1e3:.2f}" for op in OPS)
        t = med(p, "per_image.train_seconds") or 0
        md.append(f"| {p['label']} | {f} | {b} | {t * 1e3:.2f} "
                  f"{spread(p, 'per_image.train_seconds')} |")
    md.append("")


def fig3(ps, out, md):
    md.append("## Figure 3: Fashion-MNIST training, test accuracy per epoch\n")
    md.append("| run | test accuracy by epoch | final |")
    md.append("|---|---|---|")
    fig, ax = plt.subplots(figsize=(6, 4))
    for p in ps:
        if not p["runs"]:
            continue
        acc = [e["test_accuracy"] for e in p["runs"][0]["epochs"]]
        ax.plot(range(1, len(acc) + 1), acc, marker="o", label=p["label"])
        md.append(f"| {p['label']} | {', '.join(f'{a:.4f}' for a in acc)} | {acc[-1]:.4f} |")
    ax.set_xticks(range(1, 1 + max((len(p["runs"][0]["epochs"]) for p in ps if p["runs"]),
                                   default=1)))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7)
    ax.set_title("Figure 3: training curves, clean vs noise settings")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig3.png"), dpi=120)
    md.append("")


def table2(ps, out, md):
    md.append("## Table 2: Fashion-MNIST inference accuracy\n")
    md.append("| setting | accuracy |")
    md.append("|---|---|")
    for p in ps:
        a = med(p, "accuracy")
        md.append(f"| {p['label']} | {a:.4f} |" if a is not None else f"| {p['label']} | - |")
    md.append("")


def main():
    out = sys.argv[1]
    with open(os.path.join(out, "results.json")) as f:
        r = json.load(f)
    env = r["environment"]
    md = [f"# darknight bench: {os.path.basename(env['suite'])}\n",
          f"{env['date']}, darknight {env['darknight']}, {env['cpu']} ({env['cores']} cores, "
          f"OMP_NUM_THREADS {env['OMP_NUM_THREADS']}), {env['repeat']} runs per timing problem, "
          f"{env['seconds']:.0f} s in all.\n"]
    by = {}
    for p in r["problems"]:
        by.setdefault(p["figure"], []).append(p)
    for name, fn in (("fig2a", fig2a), ("fig2b", fig2b), ("fig4", fig4), ("fig3", fig3),
                     ("table2", table2)):
        if name in by:
            fn(by[name], out, md)
    with open(os.path.join(out, "tables.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print(f"bench: tables in {out}/tables.md, plots in {out}/*.png")


if __name__ == "__main__":
    main()
