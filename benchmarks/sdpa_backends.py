"""Which of PyTorch's fused attention kernels run forward+backward at FLUX.1-dev's attention shape on
this GPU (24 heads of 128, 720x720 image + 512 text tokens, bf16). Each backend runs in its own
process, since a kernel fault poisons the CUDA context for the rest of a process.

    python benchmarks/sdpa_backends.py   # one line per backend: ok, or the error (exit 1 if any failed)
"""

from __future__ import annotations

import subprocess
import sys

BACKENDS = ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")


def check(backend: str, heads: int = 24, tokens: int = 45 * 45 + 512, dim: int = 128) -> None:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for batch in (1, 4):  # the full model faulted at batch 1
        q, k, v = (torch.randn(batch, heads, tokens, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        with sdpa_kernel(getattr(SDPBackend, backend)):
            torch.nn.functional.scaled_dot_product_attention(q, k, v).float().square().mean().backward()
        torch.cuda.synchronize()


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        check(sys.argv[2])
        return 0
    failed = 0
    for backend in BACKENDS:
        r = subprocess.run([sys.executable, __file__, "--one", backend], capture_output=True, text=True)
        last = (r.stderr.strip().splitlines() or [""])[-1]
        print(f"{backend:20s} {'ok' if r.returncode == 0 else 'FAILED: ' + last}", flush=True)
        failed += r.returncode != 0
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main())
