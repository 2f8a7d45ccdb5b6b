"""Shared test setup: every test starts from the same seed on one thread, with transformers' bars off.

Tiny models run fastest on one thread, and it keeps the suite's timings steady on a 2-core machine. The
commands turn transformers' progress bars off themselves; a fixture that saves a model before any command
ran would otherwise print one into the stderr a test reads, depending on which tests ran first.
"""
import pytest
import torch
from transformers.utils import logging as hf_logging


@pytest.fixture(autouse=True, scope="session")
def no_library_bars():
    """transformers' per-file bars off for the whole session, as every command sets them."""
    hf_logging.disable_progress_bar()


@pytest.fixture(autouse=True)
def one_thread():
    """Run the test on one intra-op thread with torch seeded at 0."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def refused(capsys):
    """``refused(main, argv)``: run a command that must refuse its input and return its one error line.

    Bad input ends with exit status 2 and exactly one stderr line starting with ``error: ``.
    """

    def run(main, argv) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main(list(argv))
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        return lines[0]

    return run
