#!/usr/bin/env bash
# On a GPU: the opt-in layouts that were built without a GPU, against the defaults, at the Llama-3-8B shape.
# 1. GEMV split-K epilogues (Forward.gemvEpilogue): bench/finish_check.ts first (the same bits as the reduce
#    passes, run after run; stops here if not), then decode with and without `--gemv-epilogue` in f16, int8
#    and int4, dense and at 50%.
# 2. Few-row prefill GEMV (Forward.prefillGemv): the kernels alone against the tiled GEMM
#    (bench/gemv_rows_bench.ts; GRID=1 adds its TPR / KCHUNK sweep at 8 and 16 rows), then time to first
#    token and the speculative verify pass (K = 4) with the defaults (decode steps up to 7 tokens, then the
#    few-row GEMV up to 16 rows, then the tiled GEMM), with the GEMM for every pass (`--prefill-steps 0
#    --prefill-gemm`) and with the GEMV for every pass of at most 16 rows (`--prefill-steps 0`).
# 3. Decode-step options (PART=decode only): --gemv-early, --gemv-pipe, --l2-prefetch, --l2-prefetch-passes.
# 4. What was changed without device time to time it (PART=unmeasured only; see below).
# Raw outputs go to the folder given (default $OUT); a summary to stdout. PART=epilogue or PART=prefill runs
# one half (about 5 and 3 minutes on an H200: two device calls stay inside the 10-minute limit of one).
#   PART=epilogue bash bench/opt_in_ab.sh [OUT_DIR]   (SHAPE=tiny for a quick run of the script itself)
set -uo pipefail
out=${1:-${OUT:?give an output folder}}
shape=${SHAPE:-llama-3-8b}
part=${PART:-all}
mkdir -p "$out"

summary() { # file label
  deno eval "
    const r = JSON.parse(Deno.readTextFileSync('$1'));
    for (const x of r.rows) {
      console.log('$2 sparsity', x.sparsity, 'tokens/s', x.tokens_per_s, 'GPU ms', x.gpu_ms_per_token);
      console.log('  ', JSON.stringify(x.kernels_ms ?? {}));
    }
    for (const t of r.ttft ?? []) console.log('$2 ttft', t.prompt_tokens, 'tokens', t.ms, 'ms');
    if (r.speculative) console.log('$2 speculative', JSON.stringify(r.speculative));" || true
}

if [[ $part == all || $part == epilogue ]]; then
  ok_epilogue=1
  for q in none int4; do
    if ! deno run -A bench/finish_check.ts --runs 20 --quant "$q" --shape "$shape" | tee "$out/finish-check-$q.txt"; then
      echo "finish_check failed ($q): the epilogues are not safe on this GPU; not timing them" >&2
      ok_epilogue=0
      break
    fi
  done
  if [[ $ok_epilogue == 1 ]]; then
    for q in none int8 int4; do
      for mode in reduce-pass gemv-epilogue; do
        flag=""
        [[ $mode == gemv-epilogue ]] && flag="--gemv-epilogue"
        f="$out/$shape-$q-$mode.json"
        deno run -A cli.ts bench --shape "$shape" --sparsity 0,0.5 --tokens 256 --quant "$q" $flag --json >"$f" ||
          echo "bench $q $mode failed" >&2
        summary "$f" "$q $mode"
      done
    done
  fi
fi
[[ $part == epilogue ]] && exit 0

# 3. PART=decode: the decode-step options, dense and at 50%: the first weight loads before the input staging
#    (--gemv-early) and the o projection's weights read into L2 during attention (--l2-prefetch), both on by
#    default for f16 weights since 2026-12-03; software-pipelined row walks (--gemv-pipe) and the next GEMV's
#    weights read during the reduce passes (--l2-prefetch-passes), both off. `off` has the two defaults off.
if [[ $part == decode ]]; then
  # the runs that decide the defaults first, the ones that split the gains up after them
  for run in none:off none:base none:all none:pipe none:l2p int8:base int8:early int4:base int4:early \
    none:early none:l2; do
    q=${run%%:*}
    arm=${run#*:}
    case $arm in
      off) flags="--gemv-early off --l2-prefetch off" ;;
      base) flags="" ;;
      early) flags="--gemv-early on --l2-prefetch off" ;;
      l2) flags="--gemv-early off --l2-prefetch on" ;;
      pipe) flags="--gemv-pipe" ;;
      l2p) flags="--l2-prefetch on --l2-prefetch-passes" ;;
      all) flags="--gemv-early on --gemv-pipe --l2-prefetch on --l2-prefetch-passes" ;;
    esac
    f="$out/$shape-$q-decode-$arm.json"
    deno run -A cli.ts bench --shape "$shape" --sparsity 0,0.5 --tokens 256 --quant "$q" $flags --json >"$f" ||
      echo "bench $q $arm failed" >&2
    summary "$f" "$q $arm"
  done
  exit 0
fi

# 4. PART=unmeasured: what the second session of 2026-12-03 changed after its device time ran out. (a) The sparse
#    int8/int4 variants (d76a0e3), timed then only by bench/sparse_probe.ts: decode at 0 and 50% through the
#    decode loop. (b) Kept prefill passes (Forward.cachedPrefill): first token with passes kept (the default;
#    --ttft warms up at each length, so it times kept passes) and built anew (--prefill-cache 0); each run's
#    prefill_pass.kernelsMs.rmsnorm also times rmsnorm.wgsl with its row length as an override (1.05 ms a
#    pass of 8 rows at 2a820a6). Timed on the H200 on the evening of 2026-12-03 (docs/benchmarks.md, third
#    session); kept to re-time them.
if [[ $part == unmeasured ]]; then
  for q in int8 int4; do
    f="$out/$shape-$q-sparse-variants.json"
    deno run -A cli.ts bench --shape "$shape" --sparsity 0,0.5 --tokens 256 --quant "$q" --json >"$f" ||
      echo "bench $q failed" >&2
    summary "$f" "$q"
  done
  for cache in 16 0; do
    f="$out/$shape-ttft-prefill-cache-$cache.json"
    deno run -A cli.ts bench --shape "$shape" --sparsity 0 --tokens 16 --ttft 8,12,16,64 --prefill-cache "$cache" \
      --json >"$f" || echo "bench ttft cache $cache failed" >&2
    summary "$f" "prefill-cache $cache"
    deno eval "const r = JSON.parse(Deno.readTextFileSync('$f'));
      for (const t of r.ttft) console.log('  rmsnorm ms a pass of', t.prompt_tokens, 'rows:', t.prefill_pass?.kernelsMs?.rmsnorm)"
  done
  exit 0
fi

deno run -A bench/gemv_rows_bench.ts --shape "$shape" --rows 1,4,8,16 | tee "$out/$shape-gemv-rows.txt"
if [[ ${GRID:-0} == 1 ]]; then
  deno run -A bench/gemv_rows_bench.ts --shape "$shape" --rows 8,16 --grid | tee "$out/$shape-gemv-rows-grid.txt"
fi

# three arms: the defaults (decode steps up to 7 tokens on a GPU, then the few-row GEMV up to 16 rows, then the
# GEMM), the tiled GEMM for every pass, and the few-row GEMV for every pass of at most 16 rows
for mode in default gemm prefill-gemv; do
  flags=""
  [[ $mode == gemm ]] && flags="--prefill-steps 0 --prefill-gemm"
  [[ $mode == prefill-gemv ]] && flags="--prefill-steps 0"
  f="$out/$shape-ttft-$mode.json"
  deno run -A cli.ts bench --shape "$shape" --sparsity 0,0.5 --tokens 128 --ttft 1,4,8,11,16,64 --speculate 4 \
    $flags --json >"$f" || echo "bench ttft $mode failed" >&2
  summary "$f" "$mode"
done
