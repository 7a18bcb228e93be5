"""Deploys one destination (this stack) of a containerised service to its hosts over SSH."""

from pathlib import Path

from components.program import run

run(Path(__file__).resolve().parent)
