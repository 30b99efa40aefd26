"""Measured timing: profiles written by `hsplit calibrate` and the phase durations they predict."""

from hsplit_actors.timing.profile import Profile, ProfileError, load_profile

__all__ = ["Profile", "ProfileError", "load_profile"]
