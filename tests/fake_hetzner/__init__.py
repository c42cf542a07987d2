"""A fake Hetzner Cloud API for tests: the endpoints hetzner.hcloud's server modules call."""
