"""Sensors: each loads one BPF object (bpf/<name>.bpf.c) and decodes its ring."""

from bpfwatch.sensors.base import Scope, Sensor, SensorOptions
from bpfwatch.sensors.process import ProcessOptions, ProcessSensor

__all__ = ["ProcessOptions", "ProcessSensor", "Scope", "Sensor", "SensorOptions"]
