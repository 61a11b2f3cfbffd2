"""What the backprop chain does step by step (docs/methods.md, "The backprop baseline").

Trains ``BackpropChain`` with one AdamW (lr 1e-3, weight decay 1e-3: paper Table 3; per-parameter
Adam is the same as the trainer's one optimizer per group) and prints, every ``--every`` steps:
the batch's cross-entropy and accuracy, the gradient norm of the first and last block, the
classifier's largest weight and its Frobenius norm, the mean logit range (max - min over classes),
the mixing weights a_t and the accuracy of argmax z_T (one-hot). At the end: test and train
accuracy with the model's own (stochastic) inference. The starting values the paper leaves open
are options, so each row of the docs' table is one command:

    OMP_NUM_THREADS=1 python benchmarks/backprop_diagnostics.py -T 10 --cinit default --mix 0.5
    OMP_NUM_THREADS=1 python benchmarks/backprop_diagnostics.py -T 1 --cinit embedding --mix 0.999
"""
import argparse
import json
import math
import time

import torch
from torch.nn import functional as F

from noprop.data import load_dataset
from noprop.inference import accuracy as evaluate_accuracy
from noprop.methods import BackpropChain
from noprop.random_state import seed_everything


def grad_norm(module: torch.nn.Module) -> float:
    return math.sqrt(sum(p.grad.pow(2).sum().item() for p in module.parameters() if p.grad is not None))


@torch.no_grad()
def simplex_check(m: BackpropChain) -> None:
    """Which classes the starting classifier can predict for z on the simplex (one-hot z_T)."""
    w, b = m.classifier.weight, m.classifier.bias
    at_vertex = sorted(set((w.T + b).argmax(1).tolist()))
    dirichlet = torch.distributions.Dirichlet(torch.full((w.shape[1],), 0.1))
    z = dirichlet.sample((200_000,))
    share = torch.bincount((z @ w.T + b).argmax(1), minlength=w.shape[0]).float() / len(z)
    print(json.dumps({"classes_winning_at_a_vertex": at_vertex,
                      "share_of_dirichlet_points_per_class": [round(v, 4) for v in share.tolist()]}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-T", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--mix", type=float, default=None, help="start of every a_t (default: the method's)")
    ap.add_argument("--cinit", default="embedding", choices=["embedding", "default"])
    ap.add_argument("--cscale", type=float, default=1.0)
    ap.add_argument("--embedding", default="onehot")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--out", default=None, help="JSON file for the result and every logged row")
    a = ap.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(a.dataset, progress=False)
    seed_everything(0)
    m = BackpropChain(data.spec, num_blocks=a.T, embedding=a.embedding, initial_mix=a.mix,
                      classifier_init=a.cinit, classifier_scale=a.cscale)
    m.prepare(data.train_x, data.train_y)
    simplex_check(m)
    opt = torch.optim.AdamW(m.parameters(), lr=a.lr, weight_decay=1e-3)
    n, step, rows = len(data.train_y), 0, []
    g = torch.Generator().manual_seed(0)
    onehot = a.embedding == "onehot"
    t0 = time.time()
    for epoch in range(a.epochs):
        m.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, a.batch):
            x, y = data.train_x[perm[i:i + a.batch]], data.train_y[perm[i:i + a.batch]]
            zs = m.chain(x)
            logits = m.classifier(zs[-1])
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if step % a.every == 0:
                gn = [grad_norm(b) for b in m.blocks]
                w = m.classifier.weight
                row = {
                    "step": step, "epoch": epoch, "loss": loss.item(),
                    "acc": (logits.argmax(1) == y).float().mean().item(),
                    "gnorm_first": gn[0], "gnorm_last": gn[-1], "gnorm": [round(v, 4) for v in gn],
                    "W_maxabs": w.abs().max().item(), "W_norm": w.norm().item(),
                    "logit_range": (logits.max(1).values - logits.min(1).values).mean().item(),
                    "a": [round(v, 3) for v in torch.tanh(m.mix_logits).tolist()],
                    "zarg_acc": (zs[-1].argmax(1) == y).float().mean().item() if onehot else None,
                }
                rows.append(row)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                  for k, v in row.items() if k != "gnorm"}), flush=True)
            opt.step()
            step += 1
    m.eval()
    with torch.no_grad():
        z_t = m.chain(data.test_x, generator=torch.Generator().manual_seed(1))[-1]
    res = dict(vars(a), test_acc=evaluate_accuracy(m, data.test_x, data.test_y),
               train_acc=evaluate_accuracy(m, data.train_x, data.train_y),
               test_argmax_zT_acc=(z_t.argmax(1) == data.test_y).float().mean().item() if onehot else None,
               steps=step, seconds=time.time() - t0, final_a=torch.tanh(m.mix_logits).tolist(),
               W_maxabs=m.classifier.weight.abs().max().item())
    print("RESULT", json.dumps(res), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"result": res, "rows": rows}, f)


if __name__ == "__main__":
    main()
