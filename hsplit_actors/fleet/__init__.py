"""Device profiles (a catalogue kept as data) and fleets built from them, explicit or sampled, seeded."""

from hsplit_actors.fleet.devices import DeviceProfile, ServerProfile, load_catalogue
from hsplit_actors.fleet.sampling import Fleet, build_fleet

__all__ = ["DeviceProfile", "Fleet", "ServerProfile", "build_fleet", "load_catalogue"]
