#!/usr/bin/env python3
"""Digitise the published H100 kernel-throughput bar charts of SandAI-org/MagiAttention into
data/kernel-published-h100.csv (every kernel's bar, or why there is none).

The figures: assets/magi_attn/exp/kernel/h100/<mask>_mask/<fwd|bwd>/flops_report.png, added in
commit 09fc31b2 ("Dev v1.1.0"), unchanged at 2c641357; drawn from exps/attn/run_benchmark.py at that
commit (batch 1, 48:8 heads, D = 128, bf16, median of do_bench_flops). 11904 x 4704 px each.

Method (no OCR, no hand-read values except the y tick step, which is read off each figure's axis):
  1. y scale: rows whose pixels are mostly the grid-line grey (234,234,234) are the grid lines; the
     bottom spine (204 grey) is 0. A least-squares line through (row centre, k * tick step) gives
     TFLOPS per pixel; its worst residual is printed (< 1 px on every figure).
  2. kernels: the legend patches, left to right, give each kernel's exact bar colour (bars are drawn
     opaque, without an edge); the order is the legend's text, read once by eye (KERNELS).
  3. slots: the runs of each bar colour on the row just above the spine give bar left edges; a fit
     left = a + g*G + i*w (group g, legend index i) places every slot, also those without a bar.
  4. a bar's top: in each column of the bar's outer thirds (the line markers sit on its centre), the
     highest row of the bar's own colour connected to the spine through gaps of at most 45 px (the
     other kernels' lines, 2.5 pt with a white 4 pt halo, cross bars); the median over columns.
     Cross-check: the centre of the line marker (a white-faced diamond at the same value) on the
     slot's centre column; the two must agree within 1.5 TFLOPS or the bar is reported ambiguous.
  5. a slot without a bar: a mark in the kernel's colour just above the axis (the figures show an
     "X"; MagiAttention's plotting code draws "X" for "not supported" (-2) and "E" for OOM (-1))
     -> status `marked-x`; nothing at all -> status `no-bar`.

Requires Pillow and numpy (`pip install pillow numpy`). Usage:
  git --git-dir=<MagiAttention>.git show 09fc31b2:assets/.../flops_report.png > fig/<mask>_<pass>.png
  launch/digitise-kernel-figures.py --figures DIR [--out data/kernel-published-h100.csv] [--check]
or --repo <MagiAttention git dir> to read the PNGs straight from commit 09fc31b2.
"""

import argparse
import io
import subprocess
import sys

import numpy as np
from PIL import Image

COMMIT = "09fc31b2"
# Legend order, read off the figures (identical in all twelve).
KERNELS = ["fa2", "fa3", "cudnn", "flex", "flash_mask", "sdpa", "ffa"]
# x tick labels, read off the figures (identical in all twelve).
SEQLENS = [1024, 2048, 4096, 8192, 16384, 32768]
# Figure folder -> attnbench mask name (and parameters), tick step of its y axis (TFLOPS, read off).
FIGURES = [
    ("full_mask", "full", {"fwd": 100, "bwd": 100}),
    ("causal_mask", "causal", {"fwd": 100, "bwd": 100}),
    ("varlen_full_mask", "full_document", {"fwd": 100, "bwd": 100}),
    ("varlen_causal_mask", "causal_document", {"fwd": 100, "bwd": 100}),
    ("sw_causal_mask", "sliding_window_causal", {"fwd": 100, "bwd": 50}),
    ("varlen_block_causal_mask", "block_causal_document", {"fwd": 100, "bwd": 50}),
]
GRID = np.array([234, 234, 234])
SPINE = np.array([204, 204, 204])
GAP = 45  # px: the widest crossing of another kernel's line (with its white halo)


def close(img, rgb, tol):
    return (np.abs(img - np.asarray(rgb)[None, None, :]).max(axis=2) <= tol)


def runs(mask_1d):
    """(start, end_exclusive) of the True runs."""
    d = np.diff(np.concatenate([[0], mask_1d.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def spine_row(img):
    """Centre row of the bottom spine (the x axis, 0 TFLOPS)."""
    spines = runs(close(img[:, ::8], SPINE, 2).mean(axis=1) > 0.5)
    return (spines[-1][0] + spines[-1][1]) / 2, spines[-1][0]


def y_scale(img, step, y0, gap_cols):
    """TFLOPS = slope * row + icpt, fitted through the grid lines seen in the columns between bar groups
    (bars hide them elsewhere); k-th line above the spine = k * step."""
    sub = img[:, gap_cols]
    grid_rows = close(sub, GRID, 2).mean(axis=1) > 0.3
    lines = sorted(((a + b) / 2 for a, b in runs(grid_rows) if (a + b) / 2 < y0 - 5 and 6 <= b - a <= 14), reverse=True)
    pitch = abs(float(np.median(np.diff([y0] + lines))))
    ys = np.array([y0] + lines)
    ks = np.round((y0 - ys) / pitch) * step
    if len(set(ks)) != len(ks):
        raise SystemExit("grid lines not evenly spaced")
    slope, icpt = np.polyfit(ys, ks, 1)
    resid_px = float(np.abs(np.polyval([slope, icpt], ys) - ks).max() / abs(slope))
    return slope, icpt, resid_px, len(lines)


def legend_colours(img, y0):
    """Exact bar colours from the legend patches, left to right (the widest non-white runs of one
    colour in the upper tenth of the figure)."""
    for y in range(int(img.shape[0] * 0.02), int(img.shape[0] * 0.12)):
        row = img[y]
        key = row[:, 0].astype(np.int64) * 65536 + row[:, 1] * 256 + row[:, 2]
        d = np.flatnonzero(np.diff(key) != 0) + 1
        starts = np.concatenate([[0], d])
        ends = np.concatenate([d, [len(key)]])
        patches = [(s, tuple(int(v) for v in row[s])) for s, e in zip(starts, ends) if e - s > 200 and tuple(row[s]) != (255, 255, 255)]
        if len(patches) == len(KERNELS):
            return [c for _, c in patches]
    raise SystemExit("legend patches not found")


def slots(img, colours, ytop_spine):
    """Left edge of group 0's first slot, group pitch and slot width (px), fitted from the bars present:
    left = a + g * pitch + i * w for kernel i in group g."""
    obs = set()
    # A few rows above the axis: a line running along the axis hides the lowest rows in places.
    for y in (ytop_spine - 6, ytop_spine - 60, ytop_spine - 120):
        for i, c in enumerate(colours):
            for a, b in runs(close(img[y][None], c, 3)[0]):
                if b - a > 150 and not any(j == i and abs(a2 - a) < 50 for j, a2, _ in obs):
                    obs.add((i, int(a), int(b - a)))
    obs = sorted(obs)
    w = float(np.median([x[2] for x in obs]))
    # The group pitch: the smallest distance between two bars of one kernel.
    lefts = [sorted(a for j, a, _ in obs if j == i) for i in range(len(colours))]
    pitch = min(b - a for ls in lefts for a, b in zip(ls, ls[1:]))
    v0 = min(a - i * w for i, a, _ in obs)
    groups = [(int(round((a - i * w - v0) / pitch)), i, a) for i, a, _ in obs]
    A = np.array([[1, g, i] for g, i, _ in groups], float)
    (a0, pitch, w), *_ = np.linalg.lstsq(A, np.array([a for _, _, a in groups], float), rcond=None)
    ng = max(g for g, _, _ in groups) + 1
    if ng != len(SEQLENS):
        raise SystemExit(f"found {ng} bar groups, expected {len(SEQLENS)}")
    return a0, pitch, w


def column_top(colmask, ybottom):
    """Highest row of the bar colour connected to the axis (ybottom) through gaps of at most GAP rows
    (None: no bar colour within GAP rows of the axis)."""
    top = ybottom + 1
    for a, b in reversed([(a, b) for a, b in runs(colmask[: ybottom + 1]) if b - a >= 3]):
        if top - b > GAP:
            break
        top = a
    return None if top == ybottom + 1 else top


def markers(img, x, c, ylo, yhi):
    """Centre rows of the white-faced diamond markers on column x between rows ylo and yhi: white runs
    (the face) bounded by the kernel's line colour on both sides. The face is symmetric about the
    data point, so its middle is the value."""
    col = img[ylo:yhi, x]
    line = np.abs(col - np.asarray(c)[None]).max(axis=1) <= 30
    # A marker at a value of a few TFLOPS reaches below the axis: its lower edge is under the spine.
    below = line | (np.abs(col - SPINE[None]).max(axis=1) <= 30)
    white = (col >= 245).all(axis=1)
    out = []
    for a, b in runs(white):
        if 15 <= b - a <= 70 and a >= 10 and b + 10 < len(col) and line[a - 10:a].any() and below[b:b + 10].any():
            out.append(ylo + (a + b) / 2)
    return out


def digitise(img, step):
    y0, ytop_spine = spine_row(img)
    colours = legend_colours(img, y0)
    a0, pitch, bw = slots(img, colours, ytop_spine)
    gap_cols = [x for g in range(len(SEQLENS) - 1) for x in range(int(a0 + g * pitch + 7 * bw + 15), int(a0 + (g + 1) * pitch - 15), 4)]
    slope, icpt, resid, nlines = y_scale(img, step, y0, gap_cols)
    to_v = lambda y: slope * y + icpt  # noqa: E731
    out = []
    ybottom = ytop_spine - 4  # above the spine's anti-aliased edge
    for g, s in enumerate(SEQLENS):
        for i, (k, c) in enumerate(zip(KERNELS, colours)):
            left = a0 + g * pitch + i * bw
            xs = [int(round(left + f * bw)) for f in np.r_[np.linspace(0.08, 0.30, 12), np.linspace(0.70, 0.92, 12)]]
            centre = int(round(left + bw / 2))
            m = close(img[:, min(xs):max(xs) + 1], c, 3)
            tops = [column_top(m[:, x - min(xs)], ybottom) for x in xs]
            found = [t for t in tops if t is not None]
            bar = len(found) >= len(xs) // 2
            # Lines (with their white halo) crossing the top only lower it: the highest column is the
            # least disturbed; the second highest guards against one stray pixel.
            top = sorted(found)[1] if bar else None
            vb = to_v(top) if bar else None
            box = img[int(y0) - 260:ytop_spine, int(left + 0.2 * bw):int(left + 0.8 * bw)]
            mark = int(close(box, c, 40).sum() + close(box, (255, 0, 0), 60).sum())
            if not bar and mark > 3500:
                # No bar, a glyph on the axis (an "X" is ~4700 px of the kernel's colour; a bar under
                # its own line leaves 1500-2300).
                out.append(dict(kernel=k, seqlen=s, status="marked-x", tflops=None, bar=None, marker=None, note=f"mark px {mark}"))
                continue
            mks = markers(img, centre, c, 0, ytop_spine + 20)
            # The marker of this slot: nearest the bar top, or, without a visible bar (a bar lower than
            # the line drawn along it), one within 60 px of the axis.
            if bar:
                mks = [y for y in mks if abs(y - top) < 60]
            else:
                mks = [y for y in mks if y0 - y < 60]
            ym = min(mks, key=lambda y: abs(y - (top if bar else y0))) if mks else None
            vm = to_v(ym) if ym is not None else None
            if vm is not None:
                v, how = vm, "marker"
            elif bar:
                v, how = vb, "bar top"
            else:
                out.append(dict(kernel=k, seqlen=s, status="no-bar", tflops=None, bar=None, marker=None, note=f"mark px {mark}"))
                continue
            note = ""
            if vm is not None and vb is not None and abs(vm - vb) > 2.0:
                note = f"bar top {vb:.1f} vs marker {vm:.1f}"
            out.append(dict(kernel=k, seqlen=s, status="ok", tflops=v, bar=vb, marker=vm, how=how, note=note))
    info = dict(tflops_per_px=abs(slope), grid_resid_px=resid, grid_lines=nlines, slot_px=bw, group_px=pitch)
    return out, info


def load(args, folder, pas):
    if args.repo:
        path = f"{COMMIT}:assets/magi_attn/exp/kernel/h100/{folder}/{pas}/flops_report.png"
        data = subprocess.run(["git", f"--git-dir={args.repo}", "show", path], check=True, capture_output=True).stdout
        return Image.open(io.BytesIO(data))
    return Image.open(f"{args.figures}/{folder.removesuffix('_mask')}_{pas}.png")


HEADER = """# Kernel throughput (TFLOPS) published on H100 by MagiAttention / LongCA-bench's authors, every kernel of
# the figures SandAI-org/MagiAttention assets/magi_attn/exp/kernel/h100/<mask>_mask/{{fwd,bwd}}/flops_report.png
# (added in commit 09fc31b2, unchanged at 2c641357; blog docs/source/blog/cp_benchmark.md "Kernel Level").
# Setup per exps/attn/run_benchmark.py at 09fc31b2: batch 1, 48 query / 8 KV heads, D = 128, bf16, median of
# do_bench_flops; FLOPs of the mask's area (so a kernel computing a dense masked matrix reads low);
# seqlen = total tokens. Kernels (legend names): fa2 = flash_attn 2 (flash_attn_func; flash_attn_varlen_func
# for the document masks), fa3 = flash_attn_interface (FA3; varlen for documents), cudnn = Transformer Engine's
# cuDNN fused attention (thd), flex = torch flex_attention (block mask; score_mod if the block mask fails),
# flash_mask = PaddlePaddle FlashMask, sdpa = torch scaled_dot_product_attention (is_causal for full/causal;
# a dense boolean mask for the document and sliding-window masks, enable_gqa=True; torch picks the backend),
# ffa = MagiAttention's flex_flash_attn. Masks (theirs -> ours): full, causal; varlen_full -> full_document,
# varlen_causal -> causal_document (document lengths by their generate_seqlens, one draw per length);
# sliding_window_causal -> sliding_window_causal (the first 1024 tokens causal, then 1024 keys per query;
# FA/cuDNN called with window (1024, 0)); varlen_block_causal -> block_causal_document (their block_size 2048,
# full blocks inside each document; our pattern's block parameter defaults to 1024).
# status: ok = a bar (tflops as read); marked-x = no bar but an "X" in the kernel's colour on the axis (their
# plotting code, magi_attention/benchmarking/bench.py, draws X for "not supported" (-2) and E for OOM (-1);
# their script marks fa2/fa3/cudnn unsupported on varlen_block_causal; flex's X on the sliding-window and
# block-causal figures is not explained by the script at that commit); no-bar = neither (none here).
# read: marker = the centre of the line's diamond marker at the bar's value (preferred: the kernel's own line
# often runs along its bar top and hides the edge); bar-top = the bar's top edge by its exact colour (no
# marker found). Both are converted through a least-squares fit of the figure's grid lines (residual < 0.5 px;
# {tpp} TFLOPS per pixel). Precision +-2 TFLOPS. Ambiguous: sliding_window_causal fwd 4096 flash_mask (bar top
# 250.3 under fa2's line vs marker 253.4); flex bars of 2-12 TFLOPS on the sliding-window and block-causal
# figures are shorter than the line over them and are read by the marker alone. The fa3 rows agree with
# data/fa3-kernel-published-h100.csv within 2 TFLOPS (tests/kernel_published.rs); that file read the top of
# the line where fa3's line runs flat along its bars (full/causal fwd 2K-16K), 1.2-1.8 TFLOPS above the marker.
# Re-derive: launch/digitise-kernel-figures.py --repo <MagiAttention git dir> (Pillow, numpy; ~1.5 min).
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--figures", help="folder of <mask>_<pass>.png copies (e.g. full_fwd.png)")
    ap.add_argument("--repo", help="MagiAttention git dir to read the figures from (commit 09fc31b2)")
    ap.add_argument("--out", default="data/kernel-published-h100.csv")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if not (args.figures or args.repo):
        ap.error("give --figures DIR or --repo GITDIR")
    rows, tpps, worst = [], [], 0.0
    for folder, mask, steps in FIGURES:
        for pas in ("fwd", "bwd"):
            img = np.asarray(load(args, folder, pas).convert("RGB")).astype(np.int16)
            out, info = digitise(img, steps[pas])
            tpps.append(info["tflops_per_px"])
            print(f"{folder}/{pas}: {info['grid_lines']} grid lines, fit residual {info['grid_resid_px']:.2f} px, "
                  f"{info['tflops_per_px']:.3f} TFLOPS/px, slot {info['slot_px']:.1f} px", file=sys.stderr)
            for r in out:
                r.update(mask=mask, pass_=pas)
                if r["marker"] is not None and r["bar"] is not None:
                    worst = max(worst, abs(r["marker"] - r["bar"]))
                if args.verbose or r["note"]:
                    f = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
                    print(f"  {r['kernel']:>10} {r['seqlen']:>6} {r['status']:>9} {f(r['tflops'])} (bar top {f(r['bar'])}, marker {f(r['marker'])}) {r['note']}", file=sys.stderr)
                rows.append(r)
    print(f"worst bar top vs marker difference: {worst:.2f} TFLOPS", file=sys.stderr)
    with open(args.out, "w") as f:
        f.write(HEADER.format(tpp=f"{min(tpps):.2f}-{max(tpps):.2f}"))
        f.write("kernel,mask,pass,seqlen,status,tflops,read\n")
        for r in rows:
            v = "" if r["tflops"] is None else f"{r['tflops']:.1f}"
            how = {"marker": "marker", "bar top": "bar-top"}.get(r.get("how"), "")
            f.write(f"{r['kernel']},{r['mask']},{r['pass_']},{r['seqlen']},{r['status']},{v},{how}\n")
    print(f"wrote {args.out} ({len(rows)} rows)", file=sys.stderr)


if __name__ == "__main__":
    main()
