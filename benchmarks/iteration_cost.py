"""Iteration cost of every method on a tiny FLUX-architecture model (CPU): where the time goes, how
many transformer passes, and how close the loop is to the cost of its passes alone.

    python benchmarks/iteration_cost.py [--model DIR] [--iterations 5] [--threads 1]

For each method: time split into sampling, reward, training and the rest; transformer passes (rows);
and ratio = measured time / expected time, where expected is the time of replaying the iteration's
transformer calls alone (same batch shapes, same order, random inputs; forward only under no_grad,
forward+backward where the loop trained), measured in the same run; ratio+decode also replays the
VAE decodes (E-GRPO decodes every branch of every active step, 8x the images of DanceGRPO). Each
iteration is replayed right after it runs; the ratios are medians over iterations. E-GRPO is also
run with its lanes unbatched (lockstep off) to show what batching branches and tails buys, and
BranchGRPO and GranularGRPO with one training forward per transition (unpacked) to show what packing
a step's transitions into shared forwards buys; and E-GRPO's
256 images an iteration are decoded in one VAE call and in chunks of model.decode_batch, alternating
(timings on a shared machine drift over minutes; interleaving cancels it). Prints ratios, never
compares with fixed times.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from unittest import mock

import torch

import egrpo.trainer as trainer_mod
from egrpo.config import resolve
from egrpo.rewards import register
from egrpo.rollout import sample_iteration, training_batches
from egrpo.trainer import Trainer

PROMPTS = ["a red circle at the top left", "a blue square at the top right", "a green triangle at the bottom left",
           "a yellow circle at the bottom right"]


@register("bench_brightness")
def _bench(options, device):
    return lambda images, prompts: images.mean(dim=(1, 2, 3))


def recorder(backbone):
    """Wrap backbone.velocity and backbone.decode to record every call, in order:
    ("forward", batch, grad) and ("decode", batch). Returns the event list and the unwrapped calls."""
    events = []
    velocity_fn, decode_fn = backbone.velocity, backbone.decode

    def velocity(x, *a, **k):
        events.append(("forward", x.shape[0], torch.is_grad_enabled()))
        return velocity_fn(x, *a, **k)

    def decode(x, *a, **k):
        events.append(("decode", x.shape[0]))
        return decode_fn(x, *a, **k)

    backbone.velocity, backbone.decode = velocity, decode
    return events, velocity_fn, decode_fn


def replay(backbone, velocity_fn, decode_fn, events, h, w, kind="forward") -> float:
    """Seconds to run the same calls of one kind (same batch shapes, same order) on random inputs with
    nothing around them: transformer forwards (forward+backward where the loop trained), or the VAE
    decodes."""
    e = backbone.encode_prompts(PROMPTS[:1])
    n, c = backbone.packed_shape(h, w)
    start = time.perf_counter()
    for ev in (ev for ev in events if ev[0] == kind):
        if kind == "forward":
            b, grad = ev[1], ev[2]
            x, sigma, emb = torch.randn(b, n, c), torch.full((b,), 0.5), e.select([0] * b)
            if grad:
                velocity_fn(x, sigma, emb, h, w).square().mean().backward()
            else:
                with torch.no_grad():
                    velocity_fn(x, sigma, emb, h, w)
        else:
            with torch.no_grad():
                decode_fn(torch.randn(ev[1], n, c), h, w)
    backbone.transformer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def unpacked(units, micro_batch, updates=None):
    """training_batches with every merged unit a forward of its own (one transition per forward)."""
    return [[[u] for f in step for u in f] for step in training_batches(units, micro_batch, updates)]


def bench(model, method, iterations, lockstep=True, packed=True, **method_kw):
    raw = {"name": "bench", "model": {"path": model, "height": 32, "width": 32, "max_sequence_length": 16},
           "train": {"prompts": PROMPTS, "iterations": iterations, "prompts_per_iteration": 2,
                     "checkpoint_every": 10**6, "micro_batch": 16, "probe": False},
           "optim": {"lr": 1e-5}, "rewards": {"names": ["bench_brightness"]},
           "method": {"group_size": 8, "num_steps": 16, **method_kw}}
    tr = Trainer(resolve(raw, method), tempfile.mkdtemp(), progress=False)
    events, velocity_fn, decode_fn = recorder(tr.backbone)
    unbatched = lambda *a, **k: sample_iteration(*a, **k, lockstep=False)  # noqa: E731
    rows = []  # (log row, measured s, replayed forwards s, replayed decodes s, events) per iteration
    with mock.patch.object(trainer_mod, "sample_iteration", sample_iteration if lockstep else unbatched), \
            mock.patch.object(trainer_mod, "training_batches", training_batches if packed else unpacked):
        tr.step(0)  # warm-up
        for it in range(1, iterations + 1):
            events.clear()
            t0 = time.perf_counter()
            row = tr.step(it)
            total = time.perf_counter() - t0
            ev = list(events)  # replayed right away, so machine-speed drift hits both sides alike
            rows.append((row, total, replay(tr.backbone, velocity_fn, decode_fn, ev, 32, 32),
                         replay(tr.backbone, velocity_fn, decode_fn, ev, 32, 32, "decode"), ev))
    k = len(rows)
    mean = lambda key: sum(r[0][key] for r in rows) / k  # noqa: E731
    return {
        "sampling_s": mean("time/sampling"), "reward_s": mean("time/reward"), "training_s": mean("time/training"),
        "rest_s": sum(r[1] for r in rows) / k - mean("time/sampling") - mean("time/reward") - mean("time/training"),
        "total_s": sum(r[1] for r in rows) / k, "passes": mean("passes/sampling") + mean("passes/training"),
        "forward_calls": sum(e[0] == "forward" for r in rows for e in r[4]) / k,
        "decode_s": sum(r[3] for r in rows) / k,
        "ratio": statistics.median(t / f for _, t, f, _, _ in rows),
        "ratio_with_decode": statistics.median(t / (f + d) for _, t, f, d, _ in rows),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=None, help="a Flux-format directory (default: a fresh tiny one)")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the DAG runs each job on one)")
    p.add_argument("--methods", nargs="*", help="only these methods' rows (default: all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = args.model
    if model is None:
        from egrpo.tiny_flux import save_tiny_flux

        model = str(save_tiny_flux(tempfile.mkdtemp()))
    branch = {"split_points": [0, 3, 6]}
    cases = [("egrpo", {}, True, True), ("egrpo (unbatched lanes)", {}, False, True), ("dancegrpo", {}, True, True),
             ("mixgrpo", {"num_steps": 25}, True, True), ("mixgrpo_flash", {"num_steps": 25}, True, True),
             ("g2rpo", {}, True, True), ("g2rpo (unpacked forwards)", {}, True, False),
             ("tempflow", {"shift": 3.0}, True, True), ("branchgrpo", branch, True, True),
             ("branchgrpo (unpacked forwards)", branch, True, False)]
    cases = [c for c in cases if not args.methods or c[0].split()[0] in args.methods]
    print(f"model {model}; 2 prompts/iteration, G = 8, 32x32; {torch.get_num_threads()} threads")
    print(f"{'method':30s} {'total s':>8s} {'sample':>7s} {'reward':>7s} {'train':>7s} {'rest':>6s} "
          f"{'passes':>7s} {'calls':>6s} {'ratio':>6s} {'decode':>7s} {'ratio+decode':>12s}")
    for label, kw, lockstep, packed in cases:
        method = label.split()[0]
        r = bench(model, method, args.iterations, lockstep, packed, **kw)
        print(f"{label:30s} {r['total_s']:8.3f} {r['sampling_s']:7.3f} {r['reward_s']:7.3f} {r['training_s']:7.3f} "
              f"{r['rest_s']:6.3f} {r['passes']:7.0f} {r['forward_calls']:6.0f} {r['ratio']:6.2f} "
              f"{r['decode_s']:7.3f} {r['ratio_with_decode']:12.2f}")
    if args.methods and "egrpo" not in args.methods:
        return
    chunk, speedup = decode_chunking(model)
    print(f"VAE decode of E-GRPO's 256 images: one call takes {speedup:.2f}x the time of chunks of {chunk} "
          f"(median of 8 interleaved rounds)")


def decode_chunking(model, n_images=256, rounds=8):
    """Median over interleaved rounds of (one decode call) / (chunks of decode_batch), same latents."""
    from egrpo.flux import FluxBackbone

    bb = FluxBackbone.from_pretrained(model, max_sequence_length=16)
    x = torch.randn(n_images, *bb.packed_shape(32, 32))
    chunk = bb.decode_batch
    ratios = []
    for _ in range(rounds):
        times = []
        for batch in (None, chunk):
            bb.decode_batch = batch
            t0 = time.perf_counter()
            bb.decode(x, 32, 32)
            times.append(time.perf_counter() - t0)
        ratios.append(times[0] / times[1])
    return chunk, statistics.median(ratios)


if __name__ == "__main__":
    main()
