#!/bin/bash
# Benchmark: nnc's convolutions against oneDNN's, kernel by kernel, on the
# convolution layers of examples/fashion_cnn.nn at its batch, in one run
# with the FMA peak probe. Each round runs, one after the other on THREADS
# threads: the peak probe (build-rel/bench/fma_peak), oneDNN on every conv
# shape (build-rel/bench/onednn_conv: forward, backward data, backward
# weights, its own layouts, reorders outside the timed loop, OMP_NUM_THREADS
# threads) and one epoch of nnc training under NNC_PROFILE=1, whose
# per-kernel times are mapped to the layer and direction:
#   forward          im2col + product (with bias)
#   backward data    product dY·W + col2im
#   backward weights product dYᵀ·im2col (the forward's im2col is reused)
# or, where the code generator uses them (stride 1, codegen/lower_conv.c),
# the direct kernels "conv" (forward, NCHW, bias), "conv_dx" (backward
# data) and "conv_dw" (backward weights, codegen/lower_conv_dw.c), counted
# as products.
# The "nnc+lay" column also counts the transposes between the products'
# NHWC rows and the NCHW tensors that the profile labels with the same
# convolution and direction; "nnc prod" the products alone. Medians over
# the rounds are printed (the peak: the best round), then the
# per-layer table of the whole training step (kernel time per step and the
# products' GFLOP/s per layer and direction; docs/performance.md).
# FLOPs of a convolution: 2*N*OC*OH*OW*IC*KH*KW in every direction.
# Both sides are means over calls (nnc's profile: total time over steps;
# oneDNN: the mean of ITERS calls), so other load costs both alike; the
# "(med)" column is oneDNN's median call, the one that load did not touch.
# oneDNN runs twice a round, with OMP_WAIT_POLICY=active and =passive (on a
# shared machine its spinning threads lose a core's time to the others: 2
# threads at a load of 6.5, conv2 forward took 2.9 ms passive against 6.4
# with libgomp's default), and the better mean of each shape counts.
#
#   bench/conv_peer.sh [THREADS] [REPEATS]       (defaults: 1 3)
#   QUICK=1 bench/conv_peer.sh 2                 a smoke run: 1 round, 5 calls, the first
#                                                640 images of /usr/share/datasets/fashion-mnist
#   (NNC=build-rel/tools/nnc ONEDNN=build-rel/bench/onednn_conv
#    PEAK=build-rel/bench/fma_peak MODEL=examples/fashion_cnn.nn ITERS=50)
#
# Without onednn_conv (no libdnnl-dev when CMake ran) the oneDNN columns say
# "-" and the rest still runs. The shapes come from the .nn file (conv2d's
# filters, kernel, stride and padding: plain integers) and `nnc summary`
# (each convolution's input and output shapes).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-1}
REPEATS=${2:-3}
QUICK=${QUICK:-0}
NNC=${NNC:-build-rel/tools/nnc}
ONEDNN=${ONEDNN:-build-rel/bench/onednn_conv}
PEAK=${PEAK:-build-rel/bench/fma_peak}
MODEL=${MODEL:-examples/fashion_cnn.nn}
ITERS=${ITERS:-50}
[ "$QUICK" = 1 ] && { REPEATS=1; ITERS=5; }
[ -x "$NNC" ] || { echo "bench: $NNC not built" >&2; exit 1; }
[ -x "$PEAK" ] || { echo "bench: $PEAK not built (a Release build with AVX-512)" >&2; exit 1; }
[ -f "$MODEL" ] || { echo "bench: no $MODEL" >&2; exit 2; }
have_onednn=1
[ -x "$ONEDNN" ] || { have_onednn=0; echo "bench: $ONEDNN not built (no libdnnl-dev): nnc only" >&2; }
NNC=$(realpath "$NNC")
MODEL=$(realpath "$MODEL")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# The conv layers: NAME N IC H W OC K STRIDE PAD OH OW, one a line. kernel,
# stride and padding of the k-th conv2d call in the file; the input shape is
# the output of the layer before the k-th conv layer in `nnc summary` (the
# model's input for the first layer).
batch=$(sed 's/#.*//' "$MODEL" | sed -n 's/.*batch *= *\([0-9][0-9]*\).*/\1/p' | head -1)
[ -n "$batch" ] || { echo "bench: no 'batch = N' in $MODEL" >&2; exit 2; }
sed 's/#.*//' "$MODEL" | grep -o 'conv2d([^)]*)' >"$out/convs.txt" || true
input=$(sed 's/#.*//' "$MODEL" | sed -n 's/^ *model [^(]*([^:]*: *f32\[\([^]]*\)\].*/\1/p' | head -1)
"$NNC" summary "$MODEL" >"$out/summary.txt"
awk -v batch="$batch" -v input="$input" -v convs="$out/convs.txt" '
  function arg(s, key, dflt,   m) {
    if (match(s, key " *= *[0-9]+")) { m = substr(s, RSTART, RLENGTH); sub(/.*= */, "", m); return m }
    return dflt
  }
  function dims(s, a) { gsub(/[][ ]/, "", s); return split(s, a, ",") }
  BEGIN { nc = 0; while ((getline line < convs) > 0) call[++nc] = line; prev = input; k = 0 }
  $1 ~ /\./ && $2 ~ /^\[/ {
    shape = $0; sub(/^[^[]*/, "", shape); sub(/\].*/, "]", shape)
    if ($1 ~ /\.conv[0-9]*$/) {
      k++
      if (k > nc) { print "bench: more conv layers than conv2d calls" > "/dev/stderr"; exit 1 }
      c = call[k]; f = c; sub(/^conv2d\([^,]*, */, "", f); sub(/[^0-9].*/, "", f)
      kk = arg(c, "kernel", 3); st = arg(c, "stride", 1); pd = arg(c, "padding", 0)
      if (c ~ /padding *= *"same"/) pd = int(kk / 2)
      if (dims(prev, in_) != 3 || dims(shape, o) != 3) { print "bench: " $1 ": not a [C, H, W] shape" > "/dev/stderr"; exit 1 }
      oh = int((in_[2] + 2 * pd - kk) / st) + 1; ow = int((in_[3] + 2 * pd - kk) / st) + 1
      if (o[1] != f || o[2] != oh || o[3] != ow) {
        printf "bench: %s: conv2d%s does not give the summary'"'"'s %s\n", $1, substr(c, 7), shape > "/dev/stderr"; exit 1
      }
      name = $1; sub(/.*\./, "", name)
      print name, batch, in_[1], in_[2], in_[3], f, kk, st, pd, oh, ow, $1
    }
    prev = shape
  }' "$out/summary.txt" >"$out/shapes.txt"
[ -s "$out/shapes.txt" ] || { echo "bench: no conv layers in $MODEL" >&2; exit 2; }
onednn_args=$(awk '{ printf " %s %s %s %s %s %s %s %s %s", $1, $2, $3, $4, $5, $6, $7, $8, $9 }' "$out/shapes.txt")

# Quick mode: the first 640 training and test images of the data set.
data_flag=()
if [ "$QUICK" = 1 ]; then
  mkdir "$out/data"
  /usr/bin/python3 - "$out/data" <<'EOF'
import gzip, struct, sys
for part in ("train", "t10k"):
    for kind, header in (("images-idx3", 16), ("labels-idx1", 8)):
        src = "/usr/share/datasets/fashion-mnist/%s-%s-ubyte.gz" % (part, kind)
        raw = gzip.open(src).read()
        n = 640
        item = (len(raw) - header) // struct.unpack(">I", raw[4:8])[0]
        body = raw[:4] + struct.pack(">I", n) + raw[8:header] + raw[header:header + n * item]
        open("%s/%s-%s-ubyte" % (sys.argv[1], part, kind), "wb").write(body)
EOF
  data_flag=(--data "$out/data")
fi

load() { uptime | sed 's/.*load average: //'; }
echo "== $(basename "$MODEL"): $(wc -l <"$out/shapes.txt") conv layers at batch $batch; $REPEATS round(s) on $THREADS thread(s), load $(load)"
for r in $(seq "$REPEATS"); do
  pk=$("$PEAK" "$THREADS" | sed -n 's/.*gflops=\([0-9.]*\) .*/\1/p')
  echo "PEAK gflops=$pk" >"$out/round.$r.txt"
  if [ "$have_onednn" = 1 ]; then
    # OpenMP's two wait policies; the better mean per shape and direction counts.
    for policy in active passive; do
      # shellcheck disable=SC2086 # the shapes are words
      OMP_WAIT_POLICY=$policy OMP_NUM_THREADS=$THREADS "$ONEDNN" "$ITERS" $onednn_args |
        sed "s/\$/ policy=$policy/" >>"$out/onednn.$r.txt"
    done
    awk '{ k = $2 " " $3; m = $0; sub(/.* mean_us=/, "", m); sub(/ .*/, "", m)
           if (!(k in best) || m + 0 < bm[k]) { best[k] = $0; bm[k] = m + 0 } }
         END { for (k in best) print best[k] }' "$out/onednn.$r.txt" >>"$out/round.$r.txt"
  fi
  (cd "$out" && NNC_PROFILE=1 "$NNC" run "$MODEL" --epochs 1 --threads "$THREADS" "${data_flag[@]}" \
    --no-checkpoint --no-log --quiet >/dev/null 2>"$out/profile.$r.txt") ||
    { cat "$out/profile.$r.txt" >&2; exit 1; }
  sed -n '/^profile train/,/^profile eval/p' "$out/profile.$r.txt" | sed '1d;$d' >"$out/train.$r.txt"
  echo "round $r: peak $pk GFLOP/s, load $(load)"
done

# Median of each key's values over the rounds (awk library for both tables).
median_awk='
  function median(key,   n, i, j, v, t) {
    n = split(vals[key], v, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return n ? (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2) : ""
  }
  function add(key, x) { vals[key] = vals[key] " " x; if (!(key in seen)) { seen[key] = 1; order[++nkeys] = key } }
  function fld(line, name,   m) {
    if (!match(line, " " name "=[^ ]*")) return ""
    m = substr(line, RSTART + length(name) + 2, RLENGTH - length(name) - 2); return m
  }'

# nnc kernels of one profile row: kernel name, op, %id, then LAYER DIR
# [MxNxK] [flags]; rows of updates and of unlabelled kernels have fewer.
row_awk='
  function parse_row(   i) {
    us = $3; op = $6; layer = ""; dir = ""; m = 0; n = 0; kd = 0
    if ($7 ~ /^%/ && NF >= 8 && $8 !~ /^\[/) { layer = $8; dir = $9 }
    if (op ~ /^update/) { layer = "update"; dir = "" }
    for (i = NF; i > 6; i--) if ($i ~ /^[0-9]+x[0-9]+x[0-9]+$/) { split($i, s, "x"); m = s[1]; n = s[2]; kd = s[3]; break }
  }'

echo
echo "== convolutions, medians of $REPEATS round(s) on $THREADS thread(s): GFLOP/s (FLOPs = 2*N*OC*OH*OW*IC*KH*KW)"
for r in $(seq "$REPEATS"); do
  awk -v r="$r" "$row_awk"'
    FNR == NR { full[$12] = $0; oc[$12] = $6; next }
    { parse_row()
      if (!(layer in full) || (dir != "fwd" && dir != "bwd")) next
      if (dir == "fwd") d = "fwd"
      else if ((op ~ /^matmul/ && m == oc[layer]) || op == "conv_dw") d = "bwd_weights"
      else d = "bwd_data"
      part = (op ~ /^(im2col|col2im|conv|conv_dx|conv_dw)$/ || op ~ /^matmul/) ? "core" : "layout"
      t[layer " " d " " part] += us; ds[layer " " d] = 1
      if (op ~ /^(conv|conv_dx|conv_dw)$/) t[layer " " d " prod"] += us
      if (op ~ /^matmul/) { t[layer " " d " prod"] += us; mnk[layer " " d] = mnk[layer " " d] " " m "x" n "x" kd }
    }
    END { for (k in ds) { if (!t[k " core"]) continue  # only kernels of other passes: no such gradient
                          split(k, a, " "); print "NNC layer=" a[1] " dir=" a[2] " core_us=" t[k " core"] + 0 " layout_us=" t[k " layout"] + 0 " prod_us=" t[k " prod"] + 0 " products=" substr(mnk[k], 2) } }
  ' "$out/shapes.txt" "$out/train.$r.txt" >>"$out/round.$r.txt"
done
cat "$out"/round.*.txt | awk -v shapes="$out/shapes.txt" "$median_awk"'
  BEGIN { while ((getline l < shapes) > 0) { split(l, s, " "); name[s[12]] = s[1]; lay[s[1]] = s[12]
            flops[s[1]] = 2 * s[2] * s[6] * s[10] * s[11] * s[3] * s[7] * s[7]; ns++; sh[ns] = s[1]
            desc[s[1]] = sprintf("%sx%sx%s->%sx%sx%s k%s s%s p%s", s[3], s[4], s[5], s[6], s[10], s[11], s[7], s[8], s[9]) } }
  /^PEAK/ { if (fld($0, "gflops") + 0 > pk) pk = fld($0, "gflops") + 0 }
  /^ONEDNN/ { k = fld($0, "shape") " " fld($0, "dir"); add("dnnl " k, fld($0, "mean_us")); add("dmed " k, fld($0, "us"))
             impl[k] = fld($0, "impl"); pol[fld($0, "policy")]++ }
  /^NNC/ { k = name[fld($0, "layer")] " " fld($0, "dir")
           add("core " k, fld($0, "core_us")); add("all " k, fld($0, "core_us") + fld($0, "layout_us"))
           add("prod " k, fld($0, "prod_us")); prods[k] = fld($0, "products") }
  END {
    printf "%-6s %-26s %-12s %6s %7s %7s %7s %10s %8s %8s %9s %9s  %s\n", "shape", "CxHxW->OCxOHxOW", "direction", "GFLOP", "oneDNN", "(med)", "nnc", "nnc/oneDNN", "nnc+lay", "nnc prod", "nnc/peak", "oneDNN/pk", "nnc products (MxNxK)"
    for (i = 1; i <= ns; i++) {
      split("fwd bwd_data bwd_weights", dirs, " ")
      for (j = 1; j <= 3; j++) {
        k = sh[i] " " dirs[j]; f = flops[sh[i]]
        o = (("dnnl " k) in vals) ? f / median("dnnl " k) / 1e3 : -1
        c = (("core " k) in vals) ? f / median("core " k) / 1e3 : -1
        a = (("all " k) in vals) ? f / median("all " k) / 1e3 : -1
        p = (("prod " k) in vals) ? f / median("prod " k) / 1e3 : -1
        q = (("dmed " k) in vals) ? f / median("dmed " k) / 1e3 : -1
        printf "%-6s %-26s %-12s %6.3f %7s %7s %7s %10s %8s %8s %9s %9s  %s\n", sh[i], desc[sh[i]], dirs[j], f / 1e9,
          o < 0 ? "-" : sprintf("%.1f", o), q < 0 ? "-" : sprintf("%.1f", q), c < 0 ? "(none)" : sprintf("%.1f", c),
          (o < 0 || c < 0) ? "-" : sprintf("%.2f", c / o), a < 0 ? "-" : sprintf("%.1f", a),
          p < 0 ? "-" : sprintf("%.1f", p),
          c < 0 ? "-" : sprintf("%.2f", c / pk), o < 0 ? "-" : sprintf("%.2f", o / pk), prods[k]
      }
    }
    printf "FMA peak on the same threads: %.1f GFLOP/s (the best round: the probe only loses to other load)\n", pk
    for (k in impl) { printf "oneDNN kernels: %s; OMP_WAIT_POLICY of the better run:", impl[k]; break }
    for (k in pol) printf " %s %d", k, pol[k]
    print ""
    print "(none): nnc computes no such gradient (the input of the first layer is the data)"
  }'

echo
echo "== the whole training step by layer and direction (NNC_PROFILE, medians of $REPEATS round(s), $THREADS thread(s))"
for r in $(seq "$REPEATS"); do
  awk "$row_awk"'
    { parse_row(); key = (layer == "" ? "(unlabelled)" : layer) (dir == "" ? "" : " " dir)
      t[key] += us; f[key] += 2 * m * n * kd; nk[key]++ }
    END { for (k in t) { x = k; gsub(/ /, "_", x); print "LAYER key=" x " us=" t[k] " flops=" f[k] " kernels=" nk[k] } }
  ' "$out/train.$r.txt"
done | awk "$median_awk"'
  { k = fld($0, "key"); add("us " k, fld($0, "us")); fl[k] = fld($0, "flops"); nk[k] = fld($0, "kernels") }
  END {
    for (i = 1; i <= nkeys; i++) { k = substr(order[i], 4); u[k] = median(order[i]); tot += u[k]; ftot += fl[k] }
    printf "%-22s %8s %10s %7s %10s %10s\n", "layer direction", "kernels", "us/step", "%", "MFLOP", "GFLOP/s"
    # slowest first
    n = 0; for (k in u) keys[++n] = k
    for (i = 2; i <= n; i++) for (j = i; j > 1 && u[keys[j - 1]] < u[keys[j]]; j--) { t = keys[j]; keys[j] = keys[j - 1]; keys[j - 1] = t }
    for (i = 1; i <= n; i++) { k = keys[i]; x = k; gsub(/_/, " ", x)
      printf "%-22s %8d %10.1f %7.2f %10s %10s\n", x, nk[k], u[k], 100 * u[k] / tot,
        (fl[k] > 0 ? sprintf("%.1f", fl[k] / 1e6) : "-"), (fl[k] > 0 ? sprintf("%.1f", fl[k] / u[k] / 1e3) : "-") }
    printf "%-22s %8s %10.1f %7.2f %10.1f %10.1f\n", "step (all kernels)", "", tot, 100, ftot / 1e6, ftot / tot / 1e3
    print "(GFLOP/s counts the products only: 2*M*N*K of each labelled matrix product)"
  }'
echo "load at the end: $(load)"
