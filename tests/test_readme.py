"""The README's first section tells the truth: its quoted run is in the format
gpucnn prints, its figures agree with each other and with the data, and CI runs
exactly its test command."""

import re
from pathlib import Path

from gpucnn.datasets import load_digits
from gpucnn.trainer import format_epoch_line

ROOT = Path(__file__).resolve().parent.parent
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+)  loss ([\d.]+)  accuracy ([\d.]+)  lr ([\d.e+-]+)  "
                        r"([\d.]+) s  (\d+) img/s")


def first_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Two commands", 1)[1].split("\n## ", 1)[0]


def fenced_blocks(language: str) -> list[str]:
    """The fenced code blocks of "Two commands" whose info string is ``language``."""
    return [body for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", first_section(), re.S | re.M)
            if lang == language]


def quoted_run() -> list[str]:
    """The lines of the quoted `gpucnn train` output in "Two commands"."""
    runs = [b for b in fenced_blocks("") if b.startswith("epoch ")]
    assert len(runs) == 1, "the README quotes exactly one run"
    return runs[0].splitlines()


def test_quoted_epoch_lines_are_what_the_trainer_prints():
    epoch_lines = [line for line in quoted_run() if line.startswith("epoch ")]
    assert epoch_lines
    for line in epoch_lines:
        match = EPOCH_LINE.fullmatch(line)
        assert match, line
        epoch, epochs, loss, accuracy, lr, seconds, rate = match.groups()
        logs = {"loss": float(loss), "accuracy": float(accuracy), "lr": float(lr), "time": float(seconds)}
        assert format_epoch_line(int(epoch) - 1, int(epochs), logs, float(rate)) == line


def test_quoted_test_accuracy_is_its_own_fraction_of_the_digits_test_split():
    (line,) = [line for line in quoted_run() if line.startswith("test accuracy")]
    accuracy, correct, total = re.fullmatch(r"test accuracy ([\d.]+) \((\d+)/(\d+)\), test loss [\d.]+",
                                            line).groups()
    assert f"{int(correct) / int(total):.4f}" == accuracy
    _, (x_test, _) = load_digits()
    assert int(total) == len(x_test)


def test_ci_runs_exactly_the_readme_test_command():
    test_command = fenced_blocks("bash")[1].strip()
    assert "pytest" in test_command
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_first_section_names_the_test_time_and_the_reference_extra():
    section = first_section()
    assert re.search(r"\d+ (s|min)", section.split(".venv/bin/python -m pytest -q", 1)[1])
    assert '".[reference]"' in section or '"reference"' in section or "`reference`" in section
