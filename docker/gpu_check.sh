#!/usr/bin/env bash
# One command on a GPU machine, about 10 minutes on one GPU: `vaebench perf` on the paper
# suite's networks (pythae's, MNIST; the vaebench engine in each mode, ms per step at batch 4),
# the paper suite's MNIST cells (one seed) in fp32 and in bf16, VQ-VAE's 100 epochs on full MNIST
# with the vaebench engine, and the paper suite's MNIST cells end to end with --jobs under each
# engine. Tables: per family fp32 and bf16 epoch seconds, ours/stock, the share of the measured
# matmul rate, peak GPU memory, the --jobs speed-up; then the engine's two targets.
#   bash docker/gpu_check.sh
#   (EPOCHS=3 PERF_TRAIN=10000 JOBS=8 MIRROR=DIR OUT=gpu-check PRECISIONS="fp32 bf16" INSTALL=1
#    MODELS=betavae,vqvae,vaegan VQ_EPOCHS=100 COMPILE=default ENGINE_CHECK=1)
# Offline GPU machine: `. gpu-env.sh && INSTALL=0 bash docker/gpu_check.sh` (see
# ../shared/tools/gpu/README.md); the mirror then comes from $VAEBENCH_DATA_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
EPOCHS=${EPOCHS:-3}
JOBS=${JOBS:-8}
mkdir -p "$OUT"

if [ "${INSTALL:-1}" = 1 ]; then python3 -m pip install --quiet -e .; fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

common=()  # options both commands take: the data mirror, the families
[ -n "${MIRROR:-}" ] && common=(--data-mirror "$MIRROR")
[ -n "${MODELS:-}" ] && common+=(--models "$MODELS")
sets=(--set "train.epochs=$EPOCHS")
[ -n "${MAX_TRAIN:-}" ] && sets+=(--set "data.max_train=$MAX_TRAIN")

# perf: one epoch of PERF_TRAIN images per measurement; a failing option is a row, not a crash
python3 -m benchmark perf --suite paper --datasets mnist "${common[@]}" --repeats 3 --no-cell \
    --jobs "$JOBS" --set train.epochs=1 --set "data.max_train=${PERF_TRAIN:-10000}" \
    --set data.max_test=2000 --out "$OUT/perf.json" | tee "$OUT/perf.log"
for precision in ${PRECISIONS:-fp32 bf16}; do
    python3 -m benchmark run --suite paper --datasets mnist --seeds 0 --wandb off \
        --out "$OUT/paper-$precision" "${sets[@]}" --set "train.precision=$precision" \
        "${common[@]}" | tee "$OUT/paper-$precision.log" || true
done

# the vaebench engine (train.engine=vaebench, train.compile=$COMPILE): VQ-VAE for VQ_EPOCHS on
# full MNIST, then the paper suite's MNIST cells with --jobs under each engine, wall time each
engine=(--set train.engine=vaebench --set "train.compile=${COMPILE:-default}")
if [ "${ENGINE_CHECK:-1}" = 1 ]; then
    vq=(--set "train.epochs=${VQ_EPOCHS:-100}")  # full MNIST unless MAX_TRAIN says otherwise
    [ -n "${MAX_TRAIN:-}" ] && vq+=(--set "data.max_train=$MAX_TRAIN")
    [ -n "${MIRROR:-}" ] && vq+=(--data-mirror "$MIRROR")
    python3 -m benchmark run --suite paper --datasets mnist --models vqvae --seeds 0 --wandb off \
        --out "$OUT/vq-engine" "${vq[@]}" "${engine[@]}" | tee "$OUT/vq-engine.log" || true
    for which in pythae vaebench; do
        more=(); [ "$which" = vaebench ] && more=("${engine[@]}")
        started=$(date +%s.%N)
        python3 -m benchmark run --suite paper --datasets mnist --seeds 0 --wandb off \
            --jobs "$JOBS" --out "$OUT/suite-$which" "${sets[@]}" "${more[@]}" "${common[@]}" \
            | tee "$OUT/suite-$which.log" || true
        echo "$(date +%s.%N) - $started" | bc > "$OUT/suite-$which.seconds"
    done
fi

python3 - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path

out = Path(sys.argv[1])
perf = json.loads((out / "perf.json").read_text())
config = perf["config"]
print(f"\n{config['device']} ({config.get('device_name', '')}): fp32 matmul "
      f"{perf['matmul_flops_per_s'] / 1e12:.2f} TFLOP/s; perf on {config['train_images']} "
      f"images, batch {config['batch_size']}, {config['arch']} networks")
cells = {}
for path in sorted(out.glob("paper-*/results/**/*.json")):
    record = json.loads(path.read_text())
    cells[(record["model"], record["config"]["train"]["precision"])] = record


def epoch_seconds(model, precision):
    record = cells.get((model, precision))
    if record is None:
        return "-"
    if record["status"] != "ok":
        return "failed: " + record["error"]
    # the first epoch pays CUDA/cuDNN warm-up: the median of the others when there are some
    epochs = [e["epoch_seconds"] for e in record["training"]["epochs"]]
    return f"{statistics.median(epochs[1:] or epochs):.2f}"


def peak(model):
    record = cells.get((model, "fp32"))
    value = (record or {}).get("training", {}).get("peak_gpu_memory_mb")
    return "-" if value is None else f"{value:.0f}"


print("| family | fp32 epoch s | bf16 epoch s | ours/stock | bf16/fp32 (perf) "
      "| share of matmul rate | peak GPU MB | recon/ssim fp32 |")
print("|---|---|---|---|---|---|---|---|")
for model, t in perf["training"].items():
    bf16 = t["options"].get("bf16", {})
    bf16_ratio = ("failed" if bf16.get("error") else f"{bf16.get('ratio_to_fp32', 0):.2f}")
    share = perf["flops"][model]["fraction_of_matmul_rate"]
    fp32 = cells.get((model, "fp32"))
    ssim = (f"{fp32['metrics']['recon/ssim']:.4f}" if fp32 and fp32["status"] == "ok" else "-")
    print(f"| {model} | {epoch_seconds(model, 'fp32')} | {epoch_seconds(model, 'bf16')} | "
          f"{t['ratio']:.2f} | {bf16_ratio} | {share:.1%} | {peak(model)} | {ssim} |")
if "jobs" in perf:
    j = perf["jobs"]
    print(f"\n--jobs {j['jobs']}: {j['cells']} cells in {j['parallel_s']:.1f}s against "
          f"{j['sequential_s']:.1f}s sequential: x{j['speedup']:.2f} suite throughput")
print()
for model, cost in perf.get("step_cost", {}).items():
    shown = ", ".join(f"{k} {v:.2f}" for k, v in cost["ms_per_step"].items())
    print(f"ms per step at batch {cost['batch_size']}, {model}: {shown}")
vq = [json.loads(p.read_text()) for p in out.glob("vq-engine/results/**/*.json")]
if vq and vq[0]["status"] == "ok":
    epochs, seconds = len(vq[0]["training"]["epochs"]), vq[0]["timings"]["train"]
    print(f"VQ-VAE, {epochs} epochs on full MNIST, vaebench engine "
          f"(compile={vq[0]['config']['train']['compile']}): {seconds:.1f}s of training "
          f"(target: 100 epochs in 60s or less)")
elif vq:
    print(f"VQ-VAE with the vaebench engine failed: {vq[0]['error']}")
walls = {w: float((out / f"suite-{w}.seconds").read_text()) for w in ("pythae", "vaebench")
         if (out / f"suite-{w}.seconds").exists()}
if len(walls) == 2:
    print(f"paper suite, MNIST cells, end to end with --jobs: pythae's loop {walls['pythae']:.1f}s, "
          f"vaebench engine {walls['vaebench']:.1f}s: x{walls['pythae'] / walls['vaebench']:.2f} "
          f"(target: x5 or more)")
PY
