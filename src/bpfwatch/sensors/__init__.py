"""Sensors: each loads one BPF object (bpf/<name>.bpf.c) and decodes its ring."""

from bpfwatch.sensors.base import Sensor, SensorOptions
from bpfwatch.sensors.process import ProcessFilter, ProcessSensor

__all__ = ["ProcessFilter", "ProcessSensor", "Sensor", "SensorOptions"]
