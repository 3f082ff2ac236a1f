"""`pydiffusion quality`: what the reference classifiers (pydiffusion/nets/classifiers.py) measure of a run's
samples (pydiffusion/evaluation/quality.py). Every bad value is a ConfigError (one line, exit status 2) before any
work."""
from pydiffusion.checkpoints import load_denoiser
from pydiffusion.cli.options import check_out_file
from pydiffusion.config import MAX_SAMPLES, MAX_SEED, ConfigError
from pydiffusion.data.datasets import load_dataset
from pydiffusion.data.splits import evaluation_data
from pydiffusion.evaluation.quality import evaluate_quality
from pydiffusion.files import save_json
from pydiffusion.nets.classifiers import classifier_name, load_classifier
from pydiffusion.runs import check_memory
from pydiffusion.training.tracking import log_quality

HELP = "sample quality of a run: accuracy, FD-1D and its floor, coverage, copying"


def add_arguments(parser):
    parser.add_argument("--run", required=True, help="a run directory (from `pydiffusion train`)")
    parser.add_argument("--classifier", required=True, nargs="+", metavar="FILE",
                        help="reference classifiers, from `pydiffusion classifier`; the first one's figures are unsuffixed, "
                             "each other one's are suffixed with its architecture (fd_1d_gru, ...)")
    parser.add_argument("--n", type=int, default=1000, help="samples per measurement")
    parser.add_argument("--draws", type=int, default=1, help="independent sample sets; figures are their mean")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples")
    parser.add_argument("--out", required=True, help="a .json file")


def load_classifiers(paths, dataset) -> list:
    """The classifiers of `--classifier` files, which must be of different architectures (they name the keys) and
    trained on `dataset`."""
    models = [load_classifier(p, dataset)[0] for p in paths]
    names = [classifier_name(m) for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"--classifier files {', '.join(map(str, paths))} are of architectures {', '.join(names)}; "
                          f"give at most one of each")
    return models


def check_quality_options(n, draws, seed=0, n_flag="--n", draws_flag="--draws"):
    if not 10 <= n <= MAX_SAMPLES or draws < 1 or not 0 <= seed < MAX_SEED:
        raise ConfigError(f"need {n_flag} in [10, {MAX_SAMPLES:,}] (samples per measurement), {draws_flag} >= 1 and "
                          f"--seed in [0, 2**63); got {n}, {draws} and {seed}")


def print_quality(q, wrote):
    print(f"guided accuracy {q['sample_acc_guided']:.3f}, FD-1D {q['fd_1d']:.3f} (floor {q['fd_floor']:.3f}), "
          f"coverage {q['coverage_entropy']:.3f}; wrote {wrote}")


def run(args):
    check_out_file(args.out, (".json",))
    check_quality_options(args.n, args.draws, args.seed)
    denoiser, cfg = load_denoiser(args.run)
    check_memory(cfg, denoiser.model.sample_shape, args.n, 1)
    first, *more = load_classifiers(args.classifier, cfg["dataset"])
    data = evaluation_data(load_dataset(cfg["dataset"], cfg["data_dir"], cfg["data_cache"]),
                           cfg["validation_fraction"], cfg["eval_split"])
    q = evaluate_quality(denoiser, cfg, first, data, n=args.n, seed=args.seed,
                         more_classifiers=more, draws=args.draws)
    save_json(q, args.out)
    log_quality(cfg, args.run, q)
    print_quality(q, args.out)
