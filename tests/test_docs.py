"""The docs say what the code does: the list of our choices is generated from the code."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_choices_list_is_current():
    result = subprocess.run([sys.executable, "scripts/list_choices.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_cli_command_has_a_module_with_the_plugin_interface():
    import importlib

    from galaxalign.cli import COMMANDS

    for name, module in COMMANDS.items():
        mod = importlib.import_module(module)
        assert callable(mod.add_arguments) and callable(mod.run), name
