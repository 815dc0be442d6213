"""Host sensors: the sysfs layouts of a Jetson (this machine has no thermal zones or cpufreq, so a tree with the
kernel's file formats stands in for /sys) and nvidia-smi's CSV."""

from __future__ import annotations

import time
from pathlib import Path

from inspectd.sensors import HostSensors, parse_nvidia_smi, read_sysfs


def jetson_sys(root: Path) -> Path:
    """Paths and formats as on a Jetson Orin (L4T 36): millidegrees, kHz for CPUs, Hz for the GPU devfreq."""
    for i, (kind, milli) in enumerate([("cpu-thermal", "45500"), ("gpu-thermal", "43968"), ("tj-thermal", "46000")]):
        zone = root / f"sys/class/thermal/thermal_zone{i}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(milli + "\n")
    broken = root / "sys/class/thermal/thermal_zone3"
    broken.mkdir()
    (broken / "type").write_text("soc0-thermal\n")
    (broken / "temp").mkdir()  # reading fails like a zone whose driver returns EINVAL
    for cpu, khz in (("cpu0", "1510400"), ("cpu1", "729600")):
        f = root / f"sys/devices/system/cpu/{cpu}/cpufreq/scaling_cur_freq"
        f.parent.mkdir(parents=True)
        f.write_text(khz + "\n")
    gpu = root / "sys/class/devfreq/17000000.ga10b"
    gpu.mkdir(parents=True)
    (gpu / "cur_freq").write_text("918000000\n")
    return root


def test_jetson_sysfs_layout(tmp_path: Path) -> None:
    r = read_sysfs(jetson_sys(tmp_path))
    assert r.temperature_c == {"cpu-thermal/thermal_zone0": 45.5, "gpu-thermal/thermal_zone1": 43.968,
                               "tj-thermal/thermal_zone2": 46.0}
    assert r.clock_hz == {"cpu0": 1_510_400_000.0, "cpu1": 729_600_000.0, "17000000.ga10b": 918_000_000.0}
    assert r.errors == 1


def test_this_machines_sysfs_reads_without_raising() -> None:
    r = read_sysfs()  # whatever this host has (here: no thermal zones, no cpufreq)
    assert all(-50 < t < 150 for t in r.temperature_c.values())


def test_nvidia_smi_csv() -> None:
    # First line: the query's real output on an idle H100 (inspectd.sensors.HostSensors.poll ran there: 27 ms,
    # gpu0 33 C). Second: a GPU that reports no temperature, as nvidia-smi prints it. Third: noise.
    text = "0, NVIDIA H100 80GB HBM3, 33, 375, 2619\n1, NVIDIA A2, [N/A], 1770, 6251\ngarbage line\n"
    r = parse_nvidia_smi(text)
    assert r.temperature_c == {"gpu0": 33.0}
    assert r.clock_hz == {"gpu0/sm": 375e6, "gpu0/mem": 2.619e9, "gpu1/sm": 1.77e9, "gpu1/mem": 6.251e9}


def test_poller_without_nvidia_smi(tmp_path: Path) -> None:
    s = HostSensors(root=jetson_sys(tmp_path), nvidia_smi=None, period_s=0.05)
    s.start()
    try:
        deadline = time.monotonic() + 5
        while s.polls < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s.polls >= 2 and s.latest.clock_hz["17000000.ga10b"] == 918e6
    finally:
        s.stop()
