"""`python -m ufmflow.dynamics <analysis> key=value ...`: the command lives in
`ufmflow.cli.dynamics`; this module is only its entry point (`ufmflow.cli._analysis.entry_point`
sets the CPU flags first)."""

if __name__ == "__main__":
    from ufmflow.cli._analysis import entry_point

    entry_point("dynamics")
