"""Command lines: `python -m ufmflow.sweep` (`ufmflow.cli.sweep`) and `python -m ufmflow.dynamics`
(`ufmflow.cli.dynamics`). The top layer: imports every other subpackage, none imports it.
"""
