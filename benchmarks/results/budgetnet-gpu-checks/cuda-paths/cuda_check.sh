#!/usr/bin/env bash
# CUDA paths of pretraining and BudgetNet training, on the lent GPU. Output under $OUT.
set -u -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
D=.devcheck/fmnist
BE="python3 -m budget_edge.cli"
nvidia-smi --query-gpu=name,driver_version --format=csv | tee $OUT/gpu.txt
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" | tee -a $OUT/gpu.txt
step() { echo "== $1"; shift; /usr/bin/time -f "%e s wall" "$@" 2>&1 | tail -n 25; echo "rc=${PIPESTATUS[0]}"; }
{
step "pretrain cuda fp32" $BE pretrain --backbone resnet20 --data fashion-mnist --data-dir $D --epochs 2 --limit-train 20000 --device cuda --out /tmp/pre
step "train cuda fp32, paper schedule shortened" $BE train --checkpoint benchmarks/results/pretrain-resnet20-fmnist/resnet20-fmnist.pt --data fashion-mnist --data-dir $D --preset paper --curriculum-epochs 2 --finetune-epochs 2 --device cuda --out /tmp/bn
step "train cuda bf16" $BE train --checkpoint benchmarks/results/pretrain-resnet20-fmnist/resnet20-fmnist.pt --data fashion-mnist --data-dir $D --preset demo --precision bf16 --device cuda --out /tmp/bn16
step "train killed after 20 s" timeout -s KILL 20 $BE train --checkpoint benchmarks/results/pretrain-resnet20-fmnist/resnet20-fmnist.pt --data fashion-mnist --data-dir $D --preset paper --curriculum-epochs 2 --finetune-epochs 2 --device cuda --out /tmp/kill
ls /tmp/kill
step "train resumed" $BE train --out /tmp/kill --resume --device cuda
python3 - <<'PY'
import torch
a = torch.load("/tmp/bn/budgetnet.pt", map_location="cpu", weights_only=True)
b = torch.load("/tmp/kill/budgetnet.pt", map_location="cpu", weights_only=True)
def flat(d, p=""):
    for k, v in d.items():
        if isinstance(v, dict): yield from flat(v, p + k + ".")
        elif torch.is_tensor(v) and v.is_floating_point(): yield p + k, v
fa, fb = dict(flat(a["agent"])), dict(flat(b["agent"]))
print("resumed vs uninterrupted agent, max abs diff:", max((fa[k] - fb[k]).abs().max().item() for k in fa))
PY
step "evaluate on the GPU-trained checkpoint" $BE evaluate /tmp/bn/budgetnet.pt --data fashion-mnist --data-dir $D --budgets 0.25,0.5,0.75,1.0 --out $OUT/eval
cp /tmp/bn/history.json $OUT/bn-history.json 2>/dev/null
} 2>&1 | tee $OUT/log.txt
