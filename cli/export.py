"""``adares export OUT --to lhotse|kaldi|hf DEST``: an output folder in another toolkit's format."""

from __future__ import annotations

import click

from adares.export import HF_FORMATS, TARGETS, export


@click.command("export")
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.argument("dest", type=click.Path())
@click.option("--to", "target", required=True, type=click.Choice(TARGETS), help="The format to write.")
@click.option(
    "--hf-format",
    type=click.Choice(HF_FORMATS),
    default="arrow",
    help="With --to hf: save_to_disk folder (arrow) or parquet files.",
)
@click.option("--overwrite", is_flag=True, help="Replace DEST when it is not empty.")
def export_command(out: str, dest: str, target: str, hf_format: str, overwrite: bool) -> None:
    """Export the features of an `adares extract` output folder OUT into a new folder DEST.

    lhotse: a CutSet (cuts.jsonl.gz) with the features and spans as custom arrays (and lhotse
    Features for --model none). kaldi: feats.ark/scp, spans.ark/scp (int32), utt2dur. hf: a
    Hugging Face dataset. Arrays are written losslessly. Needs `pip install 'adares[export]'`.
    """
    options = {"format": hf_format} if target == "hf" else {}
    click.echo(str(export(out, dest, to=target, overwrite=overwrite, **options)))
