"""``neurender doctor``'s GPU section (models/gpu_doctor.py): on this CPU-only machine, and with a pretend CUDA card."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from neurender.cli import main
from neurender.engine.vram import GiB, MemoryPlan, choose_batch_size
from neurender.models.gpu_doctor import TYPICAL, gpu_report


def test_without_a_gpu_it_says_so_and_what_the_cpu_would_do(capsys):
    report = gpu_report()
    assert not report["cuda_available"] and report["devices"] == []
    assert report["torch"] == torch.__version__ and report["torch_cuda_build"] == torch.version.cuda
    plan = report["plan"]
    assert plan["device"] == "cpu" and plan["dtype"] == "float32" and plan["memory_is"] == "available RAM"
    assert plan["choices"][0]["batch_size"] >= 1 and len(plan["choices"]) == 2  # no CPU-offload row on the CPU
    assert report["summary"].startswith("no CUDA GPU: torch is a CPU-only build")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "GPU" in out and "no CUDA GPU" in out and "frames per model call" in out


def test_a_budget_replaces_the_free_memory(capsys):
    report = gpu_report(vram_budget_gib=6.0)
    assert report["plan"]["memory_gib"] == 6.0 and report["plan"]["memory_is"] == "budget"
    assert main(["doctor", "--json", "--vram-budget", "64"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["gpu"]["plan"]["memory_gib"] == 64.0


def test_with_a_cuda_card_it_reports_name_memory_build_and_batch(monkeypatch, capsys):
    """A pretend RTX 4060 (8 GB, 7.2 GiB free): the report shows what torch.cuda says and the batch size that
    engine/vram.py chooses for the typical render in float16."""
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cuda, "get_device_name", lambda i=0: "NVIDIA GeForce RTX 4060")
    monkeypatch.setattr(cuda, "get_device_properties", lambda i=0: SimpleNamespace(major=8, minor=9,
                                                                                  total_memory=8 * GiB))
    monkeypatch.setattr(cuda, "mem_get_info", lambda i=0: (int(7.2 * GiB), 8 * GiB))
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    report = gpu_report()
    assert report["devices"] == [{"index": 0, "name": "NVIDIA GeForce RTX 4060", "total_gib": 8.0, "free_gib": 7.2,
                                  "capability": "8.9", "bf16": True}]
    assert report["torch_cuda_build"] == "12.4"
    plan = report["plan"]
    assert plan["device"] == "cuda:0" and plan["dtype"] == "float16" and plan["memory_gib"] == 7.2
    expected = choose_batch_size(int(7.2 * GiB), MemoryPlan(**TYPICAL, dtype="float16"))
    assert plan["choices"][0]["batch_size"] == expected >= 1
    offload = plan["choices"][2]
    assert offload["options"] == "--vae-slicing --cpu-offload" and offload["batch_size"] >= expected
    assert "RTX 4060" in report["summary"] and f"run {expected} frames" in report["summary"]
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "cuda:0 NVIDIA GeForce RTX 4060: 7.2 / 8.0 GiB free, compute 8.9, bf16" in out
    assert "CUDA build: 12.4" in out
