"""Offline model loading: diffusers folders, single-file checkpoints, ControlNets, LoRAs."""
