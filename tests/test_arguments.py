import argparse

import pytest

from pixelagent.arguments import at_least, non_negative_int, positive_int


def test_counts_accept_whole_numbers_from_their_minimum():
    assert positive_int("1") == 1 and positive_int("250") == 250
    assert non_negative_int("0") == 0 and at_least(5)("5") == 5


@pytest.mark.parametrize("parse, text, message", [
    (positive_int, "0", "at least 1, got 0"), (positive_int, "-3", "at least 1, got -3"),
    (non_negative_int, "-1", "at least 0, got -1"), (positive_int, "2.5", "whole number, got '2.5'"),
    (positive_int, "ten", "whole number, got 'ten'"),
])
def test_everything_else_is_refused_with_the_value_named(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)


def test_argparse_names_the_option():
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--limit", type=positive_int)
    with pytest.raises(argparse.ArgumentError, match="argument --limit: must be a whole number of at least 1, got -3"):
        parser.parse_args(["--limit", "-3"])
