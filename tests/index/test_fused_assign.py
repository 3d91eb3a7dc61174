"""The fused Triton assignment kernel, run on the CPU through Triton's interpreter.

`TRITON_INTERPRET=1` must be set before Triton is imported, so each check runs in a fresh interpreter. The
interpreter has no bfloat16, so it runs the kernel in float32: these tests check the tiling, the masks at
ragged edges and the running best-two merge; the GPU's bf16 rounding is checked by bench/gpu_noise.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_interpreted(code: str) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_nearest_two_matches_brute_force_over_ragged_tiles():
    run_interpreted("""
        import torch
        from index.fused_assign import TileConfig, available, nearest_exact, nearest_two
        assert available(torch.device("cpu"))
        g = torch.Generator().manual_seed(0)
        for n, k, d in [(300, 70, 24), (33, 2, 16), (64, 96, 40)]:
            x, c = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
            reference = (torch.cdist(x.double(), c.double()) ** 2).topk(2, largest=False).indices
            for config in [None, TileConfig(16, 64, 16, 1, 1)]:
                for packed in (True, False):
                    got = nearest_two(x, c, (c * c).sum(1), config, packed=packed)
                    assert got.dtype == torch.int64 and got.shape == (n, 2), got.shape
                    assert torch.equal(got, reference), (n, k, d, config, packed)
                nearest = nearest_two(x, c, (c * c).sum(1), config, two=False)
                assert torch.equal(nearest, reference[:, [0, 0]])
                labels, dist = nearest_exact(x, x, c, c, (c * c).sum(1), config)
                assert torch.equal(labels, reference[:, 0])
                torch.testing.assert_close(dist, ((x - c[labels]) ** 2).sum(1))
    """)


def test_ties_go_to_the_earlier_centroid_and_one_centroid_works():
    run_interpreted("""
        import torch
        from index.fused_assign import nearest_exact, nearest_two
        g = torch.Generator().manual_seed(1)
        base = torch.randn(40, 16, generator=g)
        c = torch.cat([base, base])  # centroid i and i + 40 are the same point, in different tiles
        x = base[torch.randint(0, 40, (100,), generator=g)] + 0.01 * torch.randn(100, 16, generator=g)
        unpacked = nearest_two(x, c, (c * c).sum(1), packed=False)
        assert torch.equal(unpacked[:, 1], unpacked[:, 0] + 40), unpacked[:5]
        packed = nearest_two(x, c, (c * c).sum(1)).sort(1).values  # packed keys tie on the low column bits
        assert torch.equal(packed, unpacked)
        labels, dist = nearest_exact(x, x, c, c, (c * c).sum(1))  # exact ties go to the lower index
        assert torch.equal(labels, unpacked[:, 0])
        torch.testing.assert_close(dist, ((x - c[labels]) ** 2).sum(1))
        one = nearest_two(x, c[:1], (c[:1] * c[:1]).sum(1))
        assert torch.equal(one, torch.zeros(100, 2, dtype=torch.int64))
        empty = nearest_two(x[:0], c, (c * c).sum(1))
        assert empty.shape == (0, 2)
    """)


def test_lloyd_step_bf16_path_with_the_kernel_equals_float32():
    run_interpreted("""
        import torch
        from index.kmeans import lloyd_step
        g = torch.Generator().manual_seed(2)
        centres = torch.randn(20, 24, generator=g)
        x = centres[torch.randint(0, 20, (500,), generator=g)] + 0.3 * torch.randn(500, 24, generator=g)
        init = x[:50].clone()
        fused = lloyd_step(x, init, precision="bf16", chunk_rows=128)
        plain = lloyd_step(x, init, precision="fp32", chunk_rows=128)
        assert torch.equal(fused[1], plain[1])
        assert torch.allclose(fused[0], plain[0]) and torch.allclose(fused[2], plain[2], rtol=1e-5, atol=1e-4)
    """)


def test_nearest_two_rejects_mismatched_inputs():
    run_interpreted("""
        import torch
        from index.fused_assign import nearest_two
        from index.fused_assign import TileConfig
        for call, message in [
            (lambda: nearest_two(torch.zeros(4, 8), torch.zeros(3, 16), torch.zeros(3)), "share dtype and dimension"),
            (lambda: nearest_two(torch.zeros(4, 8), torch.zeros(3, 8), torch.zeros(3), TileConfig(16, 512, 16)),
             "block_n 512 > 256"),
        ]:
            try:
                call()
            except ValueError as error:
                assert message in str(error), error
            else:
                raise AssertionError("no error")
    """)
