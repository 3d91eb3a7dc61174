"""The two nearest centroids of every row in one Triton kernel, for the bf16 k-means assignment on the GPU.

At N = 1M, K = 16,384 the score matrix has 16G entries: writing it and reading it back for `argmin` moves
as many bytes as the matmul does arithmetic, so a plain `addmm` + `topk` runs at about half the matmul's
speed. This kernel keeps each (rows x centroids) tile of scores in registers, folds it into a running best
two per row and never writes the matrix. Dot products accumulate in float32; the caller re-ranks the two
candidates with exact float32 distances, so the answer differs from a float32 search only at near-ties.

Triton ships with torch's CUDA builds. Without it (or without a GPU) `available` is False and the caller
uses the unfused path. With `TRITON_INTERPRET=1` the kernel runs on the CPU (float32 tensors only: the
interpreter has no bfloat16), which is how the tests check its logic on a machine with no GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only torch builds come without Triton
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device) -> bool:
    """Whether the fused kernel can run on `device` (CUDA with Triton, or anywhere under the interpreter)."""
    return triton is not None and (device.type == "cuda" or INTERPRET)


@dataclass(frozen=True)
class TileConfig:
    """Rows and centroids per program, the dimension step of each dot, and Triton's launch knobs."""

    block_m: int = 128
    block_n: int = 128
    block_d: int = 64
    num_warps: int = 8
    num_stages: int = 3


# Tried by the autotuner on the first call for each (K, d); see docs/benchmarks.md for the measured winner.
TILE_CONFIGS: tuple[TileConfig, ...] = (
    TileConfig(128, 128, 64, 8, 3),
    TileConfig(128, 256, 64, 8, 3),
    TileConfig(128, 256, 64, 8, 4),
    TileConfig(256, 128, 64, 8, 3),
    TileConfig(256, 128, 64, 8, 4),
    TileConfig(128, 128, 128, 8, 2),
    TileConfig(64, 256, 64, 4, 3),
)

INTERPRETER_TILES = TileConfig(32, 32, 16, 1, 1)
"""Small tiles for `TRITON_INTERPRET=1` runs on the CPU: several tiles and ragged edges on test-sized data."""

if triton is not None:

    @triton.jit
    def _nearest_two_kernel(
        x_ptr, c_ptr, c_norm_ptr, first_ptr, second_ptr, n, k, stride_x, stride_c,
        xf_ptr, cf_ptr, dist_ptr, stride_xf, stride_cf,
        D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
        PACKED: tl.constexpr = True, TWO: tl.constexpr = True, EXACT: tl.constexpr = False,
    ):
        rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # rows * stride may pass 2^31
        row_ok = rows < n
        dims = tl.arange(0, BLOCK_D)
        local = tl.arange(0, BLOCK_N)
        best1 = tl.full([BLOCK_M], float("inf"), tl.float32)
        best2 = tl.full([BLOCK_M], float("inf"), tl.float32)
        key1 = tl.full([BLOCK_M], 2147483647, tl.int32)
        key2 = tl.full([BLOCK_M], 2147483647, tl.int32)
        idx1 = tl.zeros([BLOCK_M], tl.int32)
        idx2 = tl.zeros([BLOCK_M], tl.int32)
        for n0 in range(0, k, BLOCK_N):
            cols = n0 + local
            col_ok = cols < k
            acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for d0 in range(0, D, BLOCK_D):
                dim_ok = (d0 + dims) < D
                a = tl.load(x_ptr + rows[:, None] * stride_x + (d0 + dims)[None, :],
                            mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
                b = tl.load(c_ptr + cols[:, None] * stride_c + (d0 + dims)[None, :],
                            mask=col_ok[:, None] & dim_ok[None, :], other=0.0)
                acc = tl.dot(a, tl.trans(b), acc)
            norms = tl.load(c_norm_ptr + cols, mask=col_ok, other=float("inf"))
            # ||x - c||^2 - ||x||^2: the row's own norm does not change its ranking.
            scores = norms[None, :] - 2.0 * acc
            if PACKED:
                # One int32 min gives score and column together: the float's bits made order-preserving as
                # signed ints, the low 8 mantissa bits replaced by the column (BLOCK_N <= 256). Scores that
                # agree to 2^-15 relative tie here; the caller's float32 re-rank of the two decides those.
                bits = scores.to(tl.int32, bitcast=True)
                keys = (tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits) & -256) | local[None, :]
                m1 = tl.min(keys, 1)
                new_first = m1 < key1
                g1 = n0 + (m1 & 255)
                if TWO:
                    m2 = tl.min(tl.where(keys == m1[:, None], 2147483647, keys), 1)
                    cand_k = tl.where(new_first, key1, m1)
                    cand_i = tl.where(new_first, idx1, g1)
                    other_k = tl.where(new_first, m2, key2)
                    other_i = tl.where(new_first, n0 + (m2 & 255), idx2)
                    take = cand_k <= other_k
                    key2 = tl.where(take, cand_k, other_k)
                    idx2 = tl.where(take, cand_i, other_i)
                key1 = tl.where(new_first, m1, key1)
                idx1 = tl.where(new_first, g1, idx1)
            else:
                m1 = tl.min(scores, 1)
                a1 = tl.argmin(scores, 1)
                new_first = m1 < best1
                if TWO:
                    masked = tl.where(local[None, :] == a1[:, None], float("inf"), scores)
                    m2 = tl.min(masked, 1)
                    a2 = tl.argmin(masked, 1)
                    # Merge the tile's best two into the running best two (strict <: earlier centroids win ties).
                    cand_v = tl.where(new_first, best1, m1)
                    cand_i = tl.where(new_first, idx1, n0 + a1)
                    other_v = tl.where(new_first, m2, best2)
                    other_i = tl.where(new_first, n0 + a2, idx2)
                    take = cand_v <= other_v
                    best2 = tl.where(take, cand_v, other_v)
                    idx2 = tl.where(take, cand_i, other_i)
                best1 = tl.where(new_first, m1, best1)
                idx1 = tl.where(new_first, n0 + a1, idx1)
        if not TWO:
            idx2 = idx1
        if EXACT:
            # Re-rank the two in float32 here, while the rows are at hand: exact squared distances from the
            # float32 copies, ties to the lower index (as an argmin over all centroids would give).
            dist1 = tl.zeros([BLOCK_M], tl.float32)
            dist2 = tl.zeros([BLOCK_M], tl.float32)
            for d0 in range(0, D, BLOCK_D):
                mask = row_ok[:, None] & ((d0 + dims) < D)[None, :]
                xv = tl.load(xf_ptr + rows[:, None] * stride_xf + (d0 + dims)[None, :], mask=mask, other=0.0)
                c1 = tl.load(cf_ptr + idx1.to(tl.int64)[:, None] * stride_cf + (d0 + dims)[None, :], mask=mask,
                             other=0.0)
                c2 = tl.load(cf_ptr + idx2.to(tl.int64)[:, None] * stride_cf + (d0 + dims)[None, :], mask=mask,
                             other=0.0)
                dist1 += tl.sum((xv - c1) * (xv - c1), 1)
                dist2 += tl.sum((xv - c2) * (xv - c2), 1)
            pick2 = (dist2 < dist1) | ((dist2 == dist1) & (idx2 < idx1))
            tl.store(first_ptr + rows, tl.where(pick2, idx2, idx1), mask=row_ok)
            tl.store(dist_ptr + rows, tl.where(pick2, dist2, dist1), mask=row_ok)
        else:
            tl.store(first_ptr + rows, idx1, mask=row_ok)
            tl.store(second_ptr + rows, idx2, mask=row_ok)

    _nearest_two_tuned = triton.autotune(
        configs=[
            triton.Config({"BLOCK_M": c.block_m, "BLOCK_N": c.block_n, "BLOCK_D": c.block_d},
                          num_warps=c.num_warps, num_stages=c.num_stages)
            for c in TILE_CONFIGS
        ],
        key=["k", "D", "PACKED", "TWO", "EXACT"],
    )(_nearest_two_kernel)


def nearest_two(x: torch.Tensor, centroids: torch.Tensor, c_norm: torch.Tensor,
                config: TileConfig | None = None, packed: bool = True, two: bool = True) -> torch.Tensor:
    """Indices (n x 2, int64) of each row's two nearest centroids by float32-accumulated dot products.

    `x` and `centroids` share a dtype (bfloat16 on the GPU); `c_norm` is the float32 squared norm of each
    centroid. `config=None` lets Triton's autotuner pick the tiles (cached per K and d); a config runs as
    given. `packed` reduces score and column as one int32 key (one reduction instead of a min and an argmin);
    `two=False` keeps only the nearest (both columns equal). With one centroid both columns are 0.
    """
    first, second, _ = _launch(x, centroids, c_norm, None, None, config, packed, two)
    return torch.stack([first, second], 1).long()


def nearest_exact(x: torch.Tensor, x_low: torch.Tensor, centroids: torch.Tensor, c_low: torch.Tensor,
                  c_norm: torch.Tensor, config: TileConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid (int64) and exact float32 squared distance per row, in one kernel.

    The low-precision copies (`x_low`, `c_low`) shortlist two centroids; the float32 ones (`x`, `centroids`)
    decide between them, so the answer differs from a float32 search only where the true nearest is not
    among the two (near-ties at bf16's resolution).
    """
    if x.shape != x_low.shape or centroids.shape != c_low.shape:
        raise ValueError("float32 and low-precision copies must have the same shapes")
    first, _, dist = _launch(x_low, c_low, c_norm, x.float().contiguous(), centroids.float().contiguous(),
                             config, True, True)
    return first.long(), dist


def _launch(x: torch.Tensor, centroids: torch.Tensor, c_norm: torch.Tensor, x_exact: torch.Tensor | None,
            c_exact: torch.Tensor | None, config: TileConfig | None, packed: bool, two: bool
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if triton is None:
        raise RuntimeError("the fused k-means assignment needs Triton (it ships with torch's CUDA builds)")
    if x.dtype != centroids.dtype or x.shape[1] != centroids.shape[1]:
        raise ValueError(f"x {tuple(x.shape)} {x.dtype} and centroids {tuple(centroids.shape)} {centroids.dtype} "
                         "must share dtype and dimension")
    if packed and config is not None and config.block_n > 256:
        raise ValueError(f"packed keys hold a column index of 8 bits: block_n {config.block_n} > 256")
    if config is None and INTERPRET:
        config = INTERPRETER_TILES  # the autotuner times with CUDA events, which the CPU lacks
    x = x.contiguous()
    centroids = centroids.contiguous()
    n, d = x.shape
    k = centroids.shape[0]
    first = torch.empty(n, dtype=torch.int32, device=x.device)
    second = torch.empty(n, dtype=torch.int32, device=x.device)
    dist = torch.empty(n, dtype=torch.float32, device=x.device)
    if n == 0:
        return first, second, dist
    exact = x_exact is not None
    xf, cf = (x_exact, c_exact) if exact else (x, centroids)  # unused without EXACT; any valid pointer
    args = (x, centroids, c_norm.float().contiguous(), first, second, n, k, x.stride(0), centroids.stride(0),
            xf, cf, dist, xf.stride(0), cf.stride(0))
    flags = {"D": d, "PACKED": packed, "TWO": two, "EXACT": exact}
    if config is None:
        def grid(meta: dict) -> tuple[int]:
            return (triton.cdiv(n, meta["BLOCK_M"]),)

        _nearest_two_tuned[grid](*args, **flags)
    else:
        block_d = min(config.block_d, max(16, triton.next_power_of_2(d)))
        _nearest_two_kernel[(triton.cdiv(n, config.block_m),)](
            *args, **flags, BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_D=block_d,
            num_warps=config.num_warps, num_stages=config.num_stages,
        )
    if k == 1:
        second = first
    return first, second, dist
