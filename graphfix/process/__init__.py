"""Signals, child processes and the limits a process runs under: the parts of graphfix that deal with the
operating system rather than with models."""
