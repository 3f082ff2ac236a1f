"""`pydiffusion export`: a trained run as model.safetensors, config.json and a model card (pydiffusion.reporting.export),
files anyone can open without this package; `pydiffusion sample --run DIR` and `pydiffusion.load_exported(DIR)` read
them back."""
from pydiffusion.reporting.export import CARD, check_export_folder, export_run

HELP = "export a trained run: model.safetensors (EMA weights), config.json and a model card README.md"


def add_arguments(parser):
    parser.add_argument("--run", required=True, help="a run directory that has finished training")
    parser.add_argument("--out", required=True, help="the export folder: new, empty, or an earlier export")


def run(args):
    check_export_folder(args.out)
    out = export_run(args.run, args.out)
    print(f"exported {args.run} into {out} (model card: {out / CARD})")
