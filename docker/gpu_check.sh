#!/usr/bin/env bash
# One command on a GPU machine, a few minutes: install, `vaebench perf`, then one paper-suite
# cell per family (MNIST, pythae's networks) in fp32 and in bf16, and a table of images/s,
# epoch time and peak GPU memory.
#   bash docker/gpu_check.sh     (EPOCHS=3 MAX_TRAIN= MIRROR=DIR OUT=gpu-check PRECISIONS="fp32 bf16")
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
EPOCHS=${EPOCHS:-3}
mkdir -p "$OUT"

python -m pip install --quiet -e .
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

sets=(--set "train.epochs=$EPOCHS")
[ -n "${MAX_TRAIN:-}" ] && sets+=(--set "data.max_train=$MAX_TRAIN")
mirror=()
[ -n "${MIRROR:-}" ] && mirror=(--data-mirror "$MIRROR")

vaebench perf --no-cell --repeats 3 --out "$OUT/perf.json" --set train.device=auto
for precision in ${PRECISIONS:-fp32 bf16}; do
    vaebench run --suite paper --datasets mnist --seeds 0 --wandb off --out "$OUT/paper-$precision" \
        "${sets[@]}" --set "train.precision=$precision" "${mirror[@]}" || true
done

python - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path

out = Path(sys.argv[1])
perf = json.loads((out / "perf.json").read_text())
print(f"\n{perf['config']['device']}: fp32 matmul {perf['matmul_flops_per_s'] / 1e12:.2f} TFLOP/s")
print("| family | perf img/s (quick nets) | ours/stock | bf16/stock | precision | paper cell img/s "
      "| epoch s | peak GPU MB | recon/ssim |")
print("|---|---|---|---|---|---|---|---|---|")
for path in sorted(out.glob("paper-*/results/**/*.json")):
    r = json.loads(path.read_text())
    t = perf["training"].get(r["model"], {})
    bf16 = t.get("options", {}).get("bf16", {}).get("ratio_to_stock", 0)
    head = (f"| {r['model']} | {t.get('ours_images_per_s', 0):.0f} | {t.get('ratio', 0):.2f} | "
            f"{bf16:.2f} | {r['config']['train']['precision']} | ")
    if r["status"] != "ok":
        print(f"{head}failed: {r['error']} | | | |")
        continue
    epochs = r["training"]["epochs"]
    images = r["dataset_info"]["splits"]["train"] * len(epochs)
    epoch_s = statistics.median(e["epoch_seconds"] for e in epochs)
    peak = r["training"].get("peak_gpu_memory_mb")
    print(f"{head}{images / r['timings']['train']:.0f} | {epoch_s:.1f} | "
          f"{'-' if peak is None else f'{peak:.0f}'} | {r['metrics']['recon/ssim']:.4f} |")
PY
