"""The splits of a data set a run uses, every one class-stratified and fixed by a seed of its own (not the run's):
the validation split held out of the training set (validation_fraction), where a study makes its choices, and the
subset of the rest a run trains on (train_fraction). The test set is the data set's own."""
import torch

from pydiffusion.data.labels import NUM_CLASSES

SUBSET_SEED = 0      # train_fraction's subsets: every configuration and seed of a study trains on the same signals
VALIDATION_SEED = 1  # the validation split: every run holds out the same signals, whatever its train_fraction


def stratified_share(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a class-stratified share `fraction` of the labels y: from each class, the first
    max(1, round(fraction * n_class)) of one permutation of its indices (a generator seeded with `seed`, classes in
    order). A smaller fraction's share lies inside a larger one's."""
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(NUM_CLASSES):
        members = (y == c).nonzero().flatten()
        keep.append(members[torch.randperm(len(members), generator=gen)[:max(1, round(fraction * len(members)))]])
    return torch.cat(keep).sort().values


def train_subset(y: torch.Tensor, fraction: float) -> torch.Tensor:
    """The subset train_fraction trains on: stratified_share with SUBSET_SEED, the same for every run."""
    return stratified_share(y, fraction, SUBSET_SEED)


def validation_split(y: torch.Tensor, fraction: float) -> tuple:
    """(the training indices kept, the validation indices): a class-stratified share `fraction` of the training
    labels y held out (stratified_share with VALIDATION_SEED), both sorted; fraction 0 holds out nothing."""
    everything = torch.arange(len(y))
    if fraction == 0:
        return everything, everything[:0]
    held = stratified_share(y, fraction, VALIDATION_SEED)
    kept = torch.ones(len(y), dtype=torch.bool)
    kept[held] = False
    return everything[kept], held


def evaluation_data(data: tuple, validation_fraction: float = 0.0, eval_split: str = "test") -> tuple:
    """(x, y, x_eval, y_eval) of a run from a data set's (x, y, x_test, y_test): the training set without its
    validation split, and what the run is evaluated on, the validation split (eval_split 'validation': where choices
    are made) or the test set ('test': read for the reported numbers). Either way the run trains on the same
    signals, so one model can be judged on both."""
    x, y, x_test, y_test = data
    kept, held = validation_split(y, validation_fraction)
    if eval_split == "validation":
        return x[kept], y[kept], x[held], y[held]
    return x[kept], y[kept], x_test, y_test
