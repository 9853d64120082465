"""The shared command-line grammar (`ufmflow.cli._grammar`): values, typed keys, suggestions,
exit codes. Pure Python, no JAX."""

from __future__ import annotations

import numpy as np
import pytest

from ufmflow.cli._grammar import (
    Key,
    UsageError,
    format_value,
    parse_keys,
    parse_values,
    run_command,
    split_words,
)


def test_lists_ranges_and_geometric_ranges():
    assert parse_values("depth", "2..8", real=False) == tuple(range(2, 9))
    assert parse_values("depth", "1..3,8", real=False) == (1, 2, 3, 8)
    assert parse_values("width", "1e3", real=False) == (1000,)
    np.testing.assert_allclose(parse_values("s", "1e-3:1e0:7", real=True),
                               10.0 ** np.linspace(-3, 0, 7), rtol=1e-14)
    assert parse_values("s", "0.5:0.5:1", real=True) == (0.5,)


@pytest.mark.parametrize("text, real, reason", [
    ("", False, "empty value"), ("1,,2", False, "empty item"), ("5..2", False, "empty range"),
    ("1:4:3", False, "geometric"), ("1e-3:1:0", True, "empty range"), ("1:2", True, "a:b:n"),
    ("-1:1:3", True, "a > 0"), ("1:2:1", True, "n = 1"), ("x", True, "not a number"),
    ("nan", True, "not finite"), ("inf", False, "not finite"), ("1.5", False, "not an integer"),
    ("2,2", False, "duplicate"), ("1..x", False, "not a number"),
])
def test_bad_values_name_key_and_token(text, real, reason):
    with pytest.raises(UsageError) as err:
        parse_values("depth", text, real=real)
    assert err.value.key == "depth" and reason in err.value.reason
    assert err.value.token in (text, text.split(",")[0])


def test_typed_keys_check_bounds_and_kinds():
    k = Key("K", "ints", (4,), "classes", ge=4, power_of_two=True)
    assert k.parse("4,8..8") == (4, 8)
    for text, reason in [("6", "power of two"), ("2", ">= 4"), ("8.5", "not an integer")]:
        with pytest.raises(UsageError, match=reason):
            k.parse(text)
    r = Key("rtol", "real", 1e-6, "tolerance", gt=0, lt=1)
    assert r.parse("1e-8") == 1e-8
    for text in ("0", "1", "-1", "nan", "1,2", "2..3"):
        with pytest.raises(UsageError):
            r.parse(text)
    b = Key("quick", "bool", False, "small sizes")
    assert b.parse("1") is True and b.parse("false") is False
    with pytest.raises(UsageError, match="choose 0 or 1"):
        b.parse("2")
    c = Key("structure", "choice", "both", "which", choices=("both", "dnc"))
    with pytest.raises(UsageError, match="choose one of both, dnc"):
        c.parse("ring")
    auto = Key("delta", "real", None, "ratio", gt=0, none="auto")
    assert auto.parse("auto") is None and auto.default_text() == "auto"
    with pytest.raises(ValueError, match="kind"):
        Key("x", "complex", 0, "no such kind")


@pytest.mark.parametrize("value", [(1, 2, 3, 4), (1, 2, 4), (1.0, 1.5, 16.0), 1e-4, 1e300, 8,
                                   "both", (1e-2, 1e-1, 1.0, 10.0, 100.0), (0.3,), 0.1234567891,
                                   tuple(np.geomspace(1e-3, 1, 7).tolist())])
def test_format_value_parses_back(value):
    if isinstance(value, tuple):
        kind = "reals" if isinstance(value[0], float) else "ints"
    else:
        kind = {float: "real", int: "int", str: "text"}[type(value)]
    assert Key("v", kind, value, "").parse(format_value(value)) == value


def test_words_unknown_key_suggests_the_nearest():
    keys = {n: Key(n, "int", 1, "") for n in ("depth", "width", "num")}
    assert parse_keys(["depth=3", "num=1e2"], keys) == {"depth": 3, "num": 100}
    with pytest.raises(UsageError, match="did you mean 'depth'"):
        split_words(["dpeth=3"], list(keys))
    with pytest.raises(UsageError, match="valid keys: depth, width, num"):
        split_words(["zzz=3"], list(keys))
    with pytest.raises(UsageError, match="twice"):
        split_words(["num=1", "num=2"], list(keys))
    with pytest.raises(UsageError, match="key=value"):
        split_words(["num"], list(keys))
    with pytest.raises(UsageError, match="only --help"):
        split_words(["--verbose"], list(keys))


def test_run_command_exit_codes(capsys):
    def body(argv):
        raise UsageError("K", argv[0], "must be a power of two")

    assert run_command("prog", ["K=6"], lambda: "HELP\n", body) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "prog: error: key 'K', token 'K=6': must be a power of two\n"
    assert run_command("prog", ["x=1", "--help"], lambda: "HELP\n", body) == 0
    assert capsys.readouterr().out == "HELP\n"
    assert run_command("prog", ["-h"], lambda: "HELP\n", body) == 0
    assert run_command("prog", [], lambda: "", lambda argv: None) == 0
