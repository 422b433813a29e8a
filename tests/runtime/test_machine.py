"""machine: the facts a bench result records about where it ran."""

from __future__ import annotations

from pathlib import Path

from budget_edge.runtime import machine


def test_cpu_model_reads_x86_and_arm_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel Xeon Gold\n")
    assert machine.cpu_model(x86) == "Intel Xeon Gold"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 62.50\n\nModel\t: NVIDIA Jetson AGX Orin\n")
    assert machine.cpu_model(arm) == "NVIDIA Jetson AGX Orin"


def test_cpu_model_falls_back_when_cpuinfo_is_missing(tmp_path: Path) -> None:
    assert machine.cpu_model(tmp_path / "missing") != ""


def test_cpu_has_bf16_reads_x86_and_arm_flags(tmp_path: Path) -> None:
    cases = {
        "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n": True,  # AMD Zen 4, Cooper Lake
        "flags\t\t: fpu sse2 avx2 avx512f amx_bf16 amx_tile\n": True,  # Sapphire Rapids
        "flags\t\t: fpu sse2 avx2 fma\n": False,  # AVX2 only: bf16 is emulated
        "Features\t: fp asimd sve bf16 i8mm\n": True,  # Arm (Graviton 3, Orin's cores lack it)
        "Features\t: fp asimd evtstrm aes\n": False,
        "processor\t: 0\n": False,  # no flags line
    }
    for text, expected in cases.items():
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text("processor\t: 0\n" + text)
        assert machine.cpu_has_bf16(cpuinfo) is expected, text
    assert machine.cpu_has_bf16(tmp_path / "missing") is False


def test_machine_info_records_cores_os_load_and_versions() -> None:
    info = machine.machine_info()
    assert info["cpu"]
    assert isinstance(info["cpu_bf16"], bool)
    assert info["os"]
    assert 1 <= info["usable_cores"] <= info["cpu_count"]
    assert info["load_average"] is None or len(info["load_average"]) == 3
    assert info["versions"]["numpy"]
    assert info["versions"]["budget_edge"]
    assert machine.peak_rss_mib() > 10  # a Python process with numpy loaded
