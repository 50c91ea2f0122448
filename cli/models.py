"""``adares models``: the compressor bundles shipped with adares, with their model cards."""

from __future__ import annotations

import json
from pathlib import Path

import click

from adares.compressor import Compressor
from adares.units import format_ms


def _summary(card: dict) -> list[str]:
    frontend = card.get("frontend", {})
    sr = int(frontend.get("sr", 16000))
    validated = card.get("validated", {})
    estimator = card.get("estimator", {})
    weights = card.get("weights", {})
    lines = [
        f"{card.get('name', '?')}  (sha256 {weights.get('sha256', '?')[:16]}…, "
        f"{weights.get('parameters', '?')} parameters)",
    ]
    if card.get("description"):
        lines.append(f"  {card['description']}")
    lines += [
        f"  front end   : {frontend.get('preset')} {sr} Hz, hop {format_ms(frontend.get('hop_samples', 0), sr=sr)}, "
        f"window {frontend.get('win_samples')} samples, {frontend.get('n_mels')} mels",
        f"  estimator   : {estimator.get('type')} channels {estimator.get('channels')}, kernel "
        f"{estimator.get('kernel_size')}, receptive field {estimator.get('receptive_field_frames')} frames",
        f"  trained at  : reduction {card.get('reduction')}",
    ]
    if validated:
        hops = ", ".join(format_ms(h, sr=sr) for h in validated.get("hop_samples", []))
        lines.append(
            f"  validated   : sr {validated.get('sr')}, hops {hops}, reductions {validated.get('reduction')}, "
            f"presets {validated.get('preset')}"
        )
    tasks = card.get("training", {}).get("tasks")
    if tasks:
        lines.append(f"  trained on  : {', '.join(tasks)}")
    for key, value in card.get("metrics", {}).items():
        lines += _metric_lines(key, value)
    return lines


def _metric_lines(key: str, value: object) -> list[str]:
    """``{task: {hop: {reduction: accuracy}}}`` as one line per task, anything else as JSON."""
    try:
        lines = [f"  {key} (%, per hop at reductions {', '.join(_reductions(value))}):"]
        for task, hops in value.items():  # type: ignore[union-attr]
            cells = ", ".join(
                f"{hop} " + "/".join(f"{100 * acc:.1f}" for acc in rhos.values())
                for hop, rhos in sorted(hops.items(), key=lambda item: float(item[0].rstrip("ms")))
            )
            lines.append(f"    {task:<10} {cells}")
        return lines
    except (AttributeError, TypeError, ValueError):
        return [f"  {key:<12}: {json.dumps(value)}"]


def _reductions(value: object) -> list[str]:
    first_task = next(iter(value.values()))  # type: ignore[union-attr]
    return list(next(iter(first_task.values())).keys())


@click.command("models")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the full model card(s) as JSON.")
def models_command(name: str | None, as_json: bool) -> None:
    """List the compressor bundles adares ships, or show the model card of NAME (a name or a folder)."""
    if name is None:
        names = Compressor.available()
        if not names:
            click.echo("no compressor bundles installed")
            return
        bundles = [Compressor.from_pretrained(n) for n in names]
    elif Compressor.is_pretrained_name(name):
        bundles = [Compressor.from_pretrained(name)]
    else:
        bundles = [Compressor.load(Path(name))]
    if as_json:
        cards = [b.card for b in bundles]
        click.echo(json.dumps(cards[0] if name else cards, indent=2))
        return
    for index, bundle in enumerate(bundles):
        if index:
            click.echo("")
        click.echo("\n".join(_summary(bundle.card)))
