"""Test doubles that ship with edgewise (no models, no network beyond loopback)."""
