"""Helpers shared by the backend tests."""
