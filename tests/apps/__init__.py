"""Tiny Pyramid applications that the pscheduler daemon tests load."""
