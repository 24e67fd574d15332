"""Cost model and discrete-event simulator of the Turnip runtime's executor.

    from turnipc.simulate import simulate, slowdown, get_profile
    r = simulate(plan, "h100", order="dynamic")
    r.makespan, r.bound, r.utilization
"""

from .cost import node_time, node_times
from .profiles import PROFILES, DeviceProfile, UnknownDeviceError, get_profile, profile_names
from .sim import ORDERS, SimResult, SimulationError, compare_orders, simulate, slowdown, unlimited_makespan

__all__ = [
    "ORDERS", "PROFILES", "DeviceProfile", "SimResult", "SimulationError", "UnknownDeviceError", "compare_orders",
    "get_profile", "node_time", "node_times", "profile_names", "simulate", "slowdown", "unlimited_makespan",
]
