"""The `hybrid` command line. Each command imports its stage lazily, so the runtime commands
(eval, generate, bench) work in an install without torch."""

from __future__ import annotations

import sys
import typer

from hybrid.runtime.errors import HybridError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train small hybrid attention/FF/QRNN language models, export them to ONNX, run them anywhere.",
)


# Each stage registers its own commands; their modules import only typer at the top, so the
# runtime commands work where torch is not installed.
from hybrid.export import commands as export_commands  # noqa: E402
from hybrid.runtime import commands as runtime_commands  # noqa: E402
from hybrid.train import commands as train_commands  # noqa: E402
from hybrid.train import data_commands, plot_commands  # noqa: E402

train_commands.register(app)
data_commands.register(app)
export_commands.register(app)
runtime_commands.register(app)
plot_commands.register(app)


# What to install when a command's stage is missing (the base install is the runtime only).
EXTRAS = {
    "torch": "train",
    "safetensors": "train",
    "datasets": "train",
    "onnx": "export",
    "onnxscript": "export",
    "sympy": "export",
    "triton": "gpu",
    "matplotlib": "plot",
    "tensorboard": "tensorboard",
}


def _plain_help(command) -> None:
    """Help as a reader wants it: an argument by its name in capitals (RUN_DIR, not {run_dir}) and
    no Python type tag beside every parameter (<path>, <int>, even --help <bool>) - the help text
    says what each one takes. Typer draws these itself (the hooks differ across its versions), so
    the finished click objects are adjusted where they expose them; parsing is untouched."""
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)

    def help_option(ctx, made=command.get_help_option):  # click makes --help per context
        option = made(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for param in command.params:  # by kind name: typer may bring its own copy of click
        kind = getattr(param, "param_type_name", "")
        if kind == "argument":
            param.metavar = (param.metavar or param.name).upper()
            shown = param.metavar if param.required else f"[{param.metavar}]"
            if hasattr(param, "_usage_display_name"):
                param._usage_display_name = lambda shown=shown: shown
            if hasattr(param, "display_type_rich"):
                param.display_type_rich = lambda ctx: None
        elif kind == "option":
            param.metavar = ""


def main():
    try:
        command = typer.main.get_command(app)
        _plain_help(command)
        command()
    except HybridError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
    except ModuleNotFoundError as e:
        package = (e.name or "").split(".")[0]
        if package not in EXTRAS:
            raise
        command = " ".join(a for a in sys.argv[1:2] if not a.startswith("-"))
        typer.echo(
            f"error: hybrid {command} needs {package}, which is not installed: pip install 'hybrid[{EXTRAS[package]}]'",
            err=True,
        )
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
