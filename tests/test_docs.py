"""The commands the README and the user's documents show are ones distill takes: every option
they name exists and every value parses (a renamed option would otherwise leave them wrong)."""

import re
import shlex

import pytest
import typer

from distill.cli import app

from .conftest import REPO

USER_DOCUMENTS = ["README.md", "docs/datasets.md", "docs/multi-node.md"]


def shown_commands(document: str) -> list[list[str]]:
    """The arguments of each `distill ...` line of the document's bash blocks."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / document).read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["distill"]:
                commands.append(words[1:])
    return commands


@pytest.mark.parametrize("document", USER_DOCUMENTS)
def test_every_command_a_user_document_shows_parses(document):
    commands = shown_commands(document)
    assert commands, f"{document} shows no distill command"
    group = typer.main.get_command(app)
    for name, *rest in commands:
        context = group.context_class(group, info_name="distill")
        command = group.get_command(context, name)
        assert command is not None, f"{document}: distill {name}: no such command"
        try:
            command.make_context(name, list(rest), parent=context)  # it consumes the list
        except Exception as error:  # typer's own click's UsageError: an unknown option, a bad value
            pytest.fail(f"{document}: distill {name} {' '.join(rest)}: {error}")
