"""Command lines: `python -m ufmflow.sweep` (`ufmflow.cli.sweep`) and `python -m ufmflow.dynamics`
(`ufmflow.cli.dynamics`). The top layer: imports every other subpackage, none imports it.

- `_grammar`: the one `key=value` grammar (typed keys, lists, ranges, `UsageError`, exit codes)
- `_runfolder`: the analysis commands' run folders (config, results.nc, summary, PNG; resume)
- `_dynamics_keys`: the dynamics analyses and their keys; `_dynamics_stability`,
  `_dynamics_hadamard`, `_dynamics_width`: the analyses themselves
"""
