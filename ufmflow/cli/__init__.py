"""Command lines: `python -m ufmflow.sweep` (`ufmflow.cli.sweep`), `python -m ufmflow.dynamics`
(`ufmflow.cli.dynamics`) and `python -m ufmflow.landscape` (`ufmflow.cli.landscape`). The top
layer: imports every other subpackage, none imports it.

- `_grammar`: the one `key=value` grammar (typed keys, lists, ranges, `UsageError`, exit codes)
- `_interrupt`: Ctrl-C for every command (exit 130 within 2 s, no temporary file or lock left)
- `_analysis`: the analysis commands' shared runner (`AnalysisCommand`: help, parsing, the
  resource guard, run folders, resume, Ctrl-C); `_analysis_cost`: their resource estimates
- `_runfolder`: the analysis commands' run folders (config, results.nc, summary, PNG; resume)
- `_dynamics_keys`: the dynamics analyses and their keys; `_dynamics_stability`,
  `_dynamics_hadamard`, `_dynamics_width`: the analyses themselves
- `_landscape_keys`: the landscape analyses and their keys; `_landscape_runs`,
  `_landscape_figs`, `_landscape_margins`: the analyses themselves
"""
