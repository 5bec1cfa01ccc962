#!/usr/bin/env bash
# On a GPU: checks the GEMV split-K epilogues (bench/finish_check.ts: the same bits as the reduce passes, run
# after run), then times Llama-3-8B-shape decode with and without them (`cli.ts bench --gemv-epilogue`) in f16,
# int8 and int4, dense and at 50%. Raw outputs go to the folder given (default $OUT); a summary to stdout.
# Stops before timing anything if a check fails. About 5 minutes on an H200.
#   bash bench/epilogue_ab.sh [OUT_DIR]        (SHAPE=tiny for a quick run of the script itself)
set -uo pipefail
out=${1:-${OUT:?give an output folder}}
shape=${SHAPE:-llama-3-8b}
mkdir -p "$out"
for q in none int4; do
  if ! deno run -A bench/finish_check.ts --runs 20 --quant "$q" --shape "$shape" | tee "$out/finish-check-$q.txt"; then
    echo "finish_check failed ($q): the epilogues are not safe on this GPU" >&2
    exit 1
  fi
done
for q in none int8 int4; do
  for mode in reduce-pass gemv-epilogue; do
    flag=""
    [[ $mode == gemv-epilogue ]] && flag="--gemv-epilogue"
    f="$out/$shape-$q-$mode.json"
    deno run -A cli.ts bench --shape "$shape" --sparsity 0,0.5 --tokens 256 --quant "$q" $flag --json >"$f" ||
      echo "bench $q $mode failed" >&2
    deno eval "
      const r = JSON.parse(Deno.readTextFileSync('$f'));
      for (const x of r.rows) {
        console.log('$q $mode sparsity', x.sparsity, 'tokens/s', x.tokens_per_s, 'GPU ms', x.gpu_ms_per_token);
      }" || true
  done
done
