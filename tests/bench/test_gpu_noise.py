"""bench/gpu_noise.py's CPU fallback: the script the lent GPU machines run works end to end on tiny sizes."""

from __future__ import annotations

from tests.bench.scripts import load_script


def test_gpu_bench_tiny_runs_on_cpu(tmp_path):
    result = load_script("gpu_noise").main(["--tiny", "--json", str(tmp_path / "r.json")])
    assert result["device"] == "cpu"
    decoders = [row["decode"] for row in result["embedding"]["pipelines"]]
    assert decoders == ["device, 1 threads, decode only", "device, 4 threads, decode only", "workers (uint8 crops)",
                        "device, 1 decode threads", "device, 4 decode threads", "cached uint8 crops, forward only"]
    assert all(row["images_per_s"] > 0 for row in result["embedding"]["pipelines"])
    assert {(row["precision"], row["kernel"]) for row in result["kmeans"]} >= {("fp32", "addmm"), ("tf32", "addmm")}
    assert result["torch_vs_faiss"]["same_assignment_share"] > 0.99
    assert all(row["mismatches_beyond_near_ties"] == 0 for row in result["kmeans"])
    assert (tmp_path / "r.json").exists()
