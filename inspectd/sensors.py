"""Host temperatures and clocks, read by a poller thread so a scrape only copies the last readings.

Sources, each optional (absent files are skipped, never an error):
- thermal zones: /sys/class/thermal/thermal_zone*/{type,temp} (millidegrees C; Jetson names CPU-therm, GPU-therm)
- CPU clocks:    /sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq (kHz)
- devfreq:       /sys/class/devfreq/*/cur_freq (Hz; the Jetson GPU, e.g. 17000000.ga10b)
- nvidia-smi:    temperature and SM/memory clocks of discrete GPUs, with a hard timeout
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("inspectd.sensors")

NVIDIA_SMI_QUERY = "index,name,temperature.gpu,clocks.sm,clocks.mem"


@dataclass(frozen=True)
class Readings:
    temperature_c: dict[str, float] = field(default_factory=dict)  # sensor -> degrees C
    clock_hz: dict[str, float] = field(default_factory=dict)  # device -> Hz
    errors: int = 0  # sources that failed on the last poll (unreadable file, nvidia-smi timeout)


def _read_number(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):  # sysfs files can vanish or return EINVAL/EAGAIN (offline CPU, powered-down GPU)
        return None


def read_sysfs(root: Path = Path("/")) -> Readings:
    temps: dict[str, float] = {}
    clocks: dict[str, float] = {}
    errors = 0
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip()
        except OSError:
            kind = zone.name
        value = _read_number(zone / "temp")
        if value is None:
            errors += 1
            continue
        temps[f"{kind}/{zone.name}"] = value / 1000.0
    for freq in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq")):
        value = _read_number(freq)
        if value is not None:
            clocks[freq.parent.parent.name] = value * 1000.0  # kHz -> Hz
    for dev in sorted((root / "sys/class/devfreq").glob("*")):
        value = _read_number(dev / "cur_freq")
        if value is not None:
            clocks[dev.name] = value
    return Readings(temps, clocks, errors)


def parse_nvidia_smi(text: str) -> Readings:
    """`nvidia-smi --query-gpu=index,name,temperature.gpu,clocks.sm,clocks.mem --format=csv,noheader,nounits`."""
    temps: dict[str, float] = {}
    clocks: dict[str, float] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 5:
            continue
        index, _name, temp, sm, mem = cells
        for target, key, value, scale in ((temps, f"gpu{index}", temp, 1.0), (clocks, f"gpu{index}/sm", sm, 1e6),
                                          (clocks, f"gpu{index}/mem", mem, 1e6)):
            with contextlib.suppress(ValueError):  # "[N/A]" on GPUs that do not report it
                target[key] = float(value) * scale  # clocks are in MHz
    return Readings(temps, clocks)


class HostSensors:
    """Polls every `period_s` in its own thread; `latest` never blocks on sysfs or nvidia-smi."""

    def __init__(self, root: Path = Path("/"), nvidia_smi: str | None = "auto", period_s: float = 10.0,
                 smi_timeout_s: float = 2.0) -> None:
        self.root = root
        self.nvidia_smi = shutil.which("nvidia-smi") if nvidia_smi == "auto" else nvidia_smi
        self.period_s = period_s
        self.smi_timeout_s = smi_timeout_s
        self.latest = Readings()
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sensors", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.smi_timeout_s + 1.0)

    def poll(self) -> Readings:
        sysfs = read_sysfs(self.root)
        temps, clocks, errors = dict(sysfs.temperature_c), dict(sysfs.clock_hz), sysfs.errors
        if self.nvidia_smi:
            try:
                out = subprocess.run([self.nvidia_smi, f"--query-gpu={NVIDIA_SMI_QUERY}",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                     timeout=self.smi_timeout_s, check=True).stdout
                smi = parse_nvidia_smi(out)
                temps.update(smi.temperature_c)
                clocks.update(smi.clock_hz)
            except (OSError, subprocess.SubprocessError) as e:
                errors += 1
                log.warning("nvidia_smi_failed", error=str(e))
        readings = Readings(temps, clocks, errors)
        self.latest = readings  # one reference assignment: readers see the old or the new snapshot, never half
        self.polls += 1
        return readings

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.period_s)
