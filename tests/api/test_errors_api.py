"""Errors from Python: ValueError / TypeError as NumPy raises them, the fact in the message, CLI advice apart."""

from __future__ import annotations

import numpy as np
import pytest

import klcli
from klcli.errors import ArgumentTypeError, DistributionError, InputError, KlcliError, ShapeError, UsageError


def test_error_classes_are_builtin_subclasses():
    for cls in (InputError, ShapeError, DistributionError, UsageError):
        assert issubclass(cls, ValueError) and issubclass(cls, KlcliError)
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, KlcliError)


@pytest.mark.parametrize("call,text,hint,api_hint", [
    (lambda: klcli.kl([0.5, 0.7], [0.5, 0.5]), "p: row 0 sums to 1.2, not 1 (tolerance 1.1e-06 for 2 float64 values)",
     "pass --normalize for counts or weights, or --kind logits if these are logits", "normalize=True"),
    (lambda: klcli.kl([[0.5, 0.5], [0.2, 0.2]], [0.5, 0.5]), "p: row 1 sums to 0.4", "--normalize", "kind='logits'"),
    (lambda: klcli.entropy([-0.5, 1.5]), "p: row 0 has a negative probability -0.5 at column 0; probabilities "
     "must be >= 0", "pass --kind logits or --kind logprobs if these are scores", "kind='logprobs'"),
])
def test_distribution_errors_keep_the_cli_advice_apart(call, text, hint, api_hint):
    with pytest.raises(ValueError) as info:
        call()
    error = info.value
    assert isinstance(error, DistributionError)
    assert str(error).startswith(text) and api_hint in str(error)
    assert "--" not in str(error) and "--" not in error.message
    assert hint in error.hint and error.cli_message().startswith(text) and hint in error.cli_message()


@pytest.mark.parametrize("call,error,text", [
    (lambda: klcli.kl("0.5,0.5", [0.5, 0.5]), TypeError, "p must be an array of numbers, not str"),
    (lambda: klcli.kl([0.5, 0.5], None), TypeError, "q must be an array of numbers"),
    (lambda: klcli.kl([0.5, 0.5], [0.5, 0.5], kind=2), TypeError, "kind must be a string"),
    (lambda: klcli.kl([0.5, 0.5], [0.5, 0.5], bogus=1), TypeError, "bogus"),
    (lambda: klcli.kl(np.array(["a", "b"]), [0.5, 0.5]), TypeError, "must hold real numbers"),
    (lambda: klcli.kl([0.5, 0.5], [0.5, 0.5], kind="scores"), ValueError, "kind='scores': use one of"),
    (lambda: klcli.kl([0.5, 0.5], [0.5, 0.5], base=1), ValueError, "base=1"),
    (lambda: klcli.kl([0.5, 0.5], [0.5, 0.5], base="2"), TypeError, "base must be a number"),
    (lambda: klcli.kl([0.5, 0.5], [0.5, 0.5], temperature=0), ValueError, "temperature=0.0"),
    (lambda: klcli.kl([0.5, 0.5], [0.5, 0.5], epsilon=-1), ValueError, "epsilon=-1.0"),
    (lambda: klcli.kl([0.5, 0.5], [0.5, 0.5], direction="both"), ValueError, "direction='both'"),
    (lambda: klcli.kl([0.5, 0.5], [0.2, 0.3, 0.5]), ValueError, "p has 2 outcomes along axis -1 but q has 3"),
    (lambda: klcli.kl(np.full((2, 2), 0.5), np.full((3, 2), 0.5)), ValueError, "do not broadcast"),
    (lambda: klcli.kl(0.5, 0.5), ValueError, "p is a single number"),
    (lambda: klcli.kl([[0.5], [0.5, 0.5]], [0.5, 0.5]), ValueError, "not a rectangular array"),
    (lambda: klcli.kl([0.5, 0.5], [0.5, 0.5], axis=2), ValueError, "axis 2 is out of bounds"),
    (lambda: klcli.kl([0.5, 0.5], [0.5, 0.5], axis=1.0), TypeError, "axis must be"),
    (lambda: klcli.js([0.5, 0.5], [0.5, 0.5], weights=(0.5, 0.6)), ValueError, "sum to 1"),
    (lambda: klcli.js([0.5, 0.5], [0.5, 0.5], weights=0.5), TypeError, "weights must be a pair"),
    (lambda: klcli.kl([0.5, 0.5], [np.nan, 0.5]), ValueError, "q: row 0 has nan at column 0"),
    (lambda: klcli.kl([0.5, 0.5], [0.5, 0.5], normalize="yes"), TypeError, "normalize must be True or False"),
])
def test_bad_arguments(call, error, text):
    with pytest.raises(error) as info:
        call()
    assert text in str(info.value) and "--" not in str(info.value)


def test_cli_prints_the_hint_as_before(cli):
    run = cli("kl", "0.5,0.7", "0.5,0.5")
    assert run.code == 2
    assert run.err == ("klcli: error: P (0.5,0.7): row 0 sums to 1.2, not 1 (tolerance 1.1e-06 for 2 float64 "
                       "values); pass --normalize for "
                       "counts or weights, or --kind logits if these are logits\n")
    run = cli("kl", "1.5,-0.5", "0.5,0.5")
    assert run.err == ("klcli: error: P (1.5,-0.5): row 0 has a negative probability -0.5 at column 1; "
                       "probabilities must be >= 0 (pass --kind logits or --kind logprobs if these are scores)\n")


def test_cli_label_outside_vocabulary_line(cli, tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((2, 4)))
    np.save(tmp_path / "y.npy", np.array([0, 9]))
    run = cli("perplexity", tmp_path / "z.npy", "--labels", tmp_path / "y.npy")
    assert run.code == 2
    assert run.err.endswith("the label at position 1 is 9, outside the vocabulary [0, 4) (ignored positions use "
                            "--ignore-index -100)\n")


def test_errors_pickle_with_their_hints():
    import pickle

    error = DistributionError("fact", hint="--flag", api_hint="flag=True")
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.hint, copy.cli_message()) == ("fact; flag=True", "--flag", "fact; --flag")
