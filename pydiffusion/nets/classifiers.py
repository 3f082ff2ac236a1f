"""The reference classifiers, whose penultimate features play the role Inception features play for FID
(pydiffusion.evaluation.quality builds FD-1D on them): `cnn`, a small CNN (the grid's; 1-D on MNIST-1D, 2-D on
images), and `gru`, a bidirectional two-layer GRU over the 40 values of an MNIST-1D signal, a different
architecture (recurrent, no convolution or pooling over positions), so that no verdict rests on one
feature extractor (docs/math.md#sample-quality).

Each is trained once per dataset on its training set with light augmentation (random shifts, scale and
noise); on MNIST-1D, 20 epochs reach about 99% (cnn, 15 s) and 98% (gru, 60 s) test accuracy on one CPU
thread. Saved atomically with its architecture, its dataset and the test accuracy measured when it was
trained, so a reader can check that the file it loaded is the one that was measured, on the data it is
used with.
"""
import logging
import time

import torch
import torch.nn.functional as F
from torch import nn

from pydiffusion.config import MNIST1D
from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.data.mnist1d import SIGNAL_LENGTH
from pydiffusion.files import UnreadableFileError, build_and_load, load_torch, save_torch

logger = logging.getLogger(__name__)


class Classifier(nn.Module):
    """Conv-BN-ReLU stacks, two 2x max-poolings (40 -> 20 -> 10; 8 -> 4 -> 2 on digits), global average and max
    pooling, a 128-d feature layer. 1-D for a signal shape (L,), 2-D for an image shape (C, H, W)."""

    def __init__(self, width: int = 32, features: int = 128, shape=(SIGNAL_LENGTH,)):
        super().__init__()
        self.width, self.n_features, self.shape = width, features, tuple(shape)
        image = len(self.shape) == 3
        conv, norm, pool = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d) if image else (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d)
        c_in = self.shape[0] if image else 1

        def block(c_in, c_out, k):
            return [conv(c_in, c_out, k, padding=k // 2), norm(c_out), nn.ReLU()]

        self.body = nn.Sequential(*block(c_in, width, 5), *block(width, width, 5), pool(2),
                                  *block(width, 2 * width, 3), *block(2 * width, 2 * width, 3), pool(2),
                                  *block(2 * width, 2 * width, 3))
        self.feature = nn.Sequential(nn.Linear(4 * width, features), nn.ReLU())
        self.head = nn.Linear(features, NUM_CLASSES)

    def features(self, x):
        """Penultimate features [B, 128] of signals x [B, 40] or images x [B, C, H, W]."""
        h = self.body(x if len(self.shape) == 3 else x[:, None]).flatten(2)
        return self.feature(torch.cat([h.mean(-1), h.amax(-1)], dim=1))

    def forward(self, x):
        return self.head(self.features(x))


class GRUClassifier(nn.Module):
    """A bidirectional 2-layer GRU over the 40 values, mean and max over positions, a 128-d feature layer."""

    def __init__(self, hidden: int = 64, features: int = 128):
        super().__init__()
        self.hidden, self.n_features = hidden, features
        self.inp = nn.Linear(1, hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.feature = nn.Sequential(nn.Linear(4 * hidden, features), nn.ReLU())
        self.head = nn.Linear(features, NUM_CLASSES)

    def features(self, x):
        h, _ = self.gru(self.inp(x[:, :, None]))
        return self.feature(torch.cat([h.mean(1), h.amax(1)], dim=1))

    def forward(self, x):
        return self.head(self.features(x))


# name -> (class, the keyword arguments that rebuild it from an instance)
CLASSIFIERS = {
    "cnn": (Classifier, lambda m: {"width": m.width, "features": m.n_features}
            | ({"shape": list(m.shape)} if len(m.shape) == 3 else {})),
    "gru": (GRUClassifier, lambda m: {"hidden": m.hidden, "features": m.n_features}),
}


def classifier_name(model) -> str:
    return next(name for name, (cls, _) in CLASSIFIERS.items() if type(model) is cls)


def augment(x, gen):
    """Light augmentation: signals [B, L] shift by up to 3 samples (zero fill) and scale by 0.9-1.1; images
    [B, C, H, W] shift by up to one pixel each way (edge pixels repeated); then small noise."""
    if x.dim() == 4:
        return augment_image(x, gen)
    B, L = x.shape
    shift = torch.randint(-3, 4, (B,), generator=gen)
    idx = (torch.arange(L)[None] - shift[:, None])
    valid = (idx >= 0) & (idx < L)
    out = torch.where(valid, x.gather(1, idx.clamp(0, L - 1)), torch.zeros(()))
    scale = 0.9 + 0.2 * torch.rand(B, 1, generator=gen)
    return out * scale + 0.05 * torch.randn(x.shape, generator=gen)


def augment_image(x, gen):
    """Images shifted by -1..1 pixels along each axis (edge pixels repeated), plus small noise. Intensities are
    not scaled: on images in [-1, 1] a scale would move the background."""
    B, C, H, W = x.shape
    rows = (torch.arange(H)[None] - torch.randint(-1, 2, (B, 1), generator=gen)).clamp(0, H - 1)
    cols = (torch.arange(W)[None] - torch.randint(-1, 2, (B, 1), generator=gen)).clamp(0, W - 1)
    b = torch.arange(B)[:, None, None]
    out = x.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return out + 0.05 * torch.randn(x.shape, generator=gen)


@torch.no_grad()
def accuracy(model, x, y, batch_size=1000):
    model.eval()
    correct = sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


@torch.no_grad()
def predict(model, x, batch_size=1000):
    model.eval()
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def features(classifier, x, batch_size=1000):
    """Penultimate features of x in float64, batched (the input of frechet_distance)."""
    classifier.eval()
    return torch.cat([classifier.features(x[i:i + batch_size].float())
                      for i in range(0, len(x), batch_size)]).double()


def fit(model, n, batch_loss, epochs, batch_size, lr, gen, describe, log):
    """The classifiers' training loop: AdamW (weight decay 1e-2) with a one-cycle schedule, `epochs` passes over
    the n examples in batches shuffled by `gen` (the last partial batch dropped); batch_loss(indices) is a
    batch's loss. Every 10 epochs and after the last one it logs describe(epoch, last batch's loss) and the
    seconds so far. Returns the model in eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    steps = epochs * (n // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(n // batch_size):
            loss = batch_loss(perm[i * batch_size:(i + 1) * batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            log(f"{describe(epoch + 1, loss)} ({time.perf_counter() - t0:.0f} s)")
    return model.eval()


def train_classifier(x, y, x_test, y_test, seed=0, epochs=20, batch_size=128, lr=3e-3, arch="cnn", log=logger.info):
    """(classifier `arch` (a name in CLASSIFIERS) in eval mode, test accuracy): AdamW with a one-cycle
    schedule on augmented signals."""
    shape = tuple(x.shape[1:])
    if len(shape) != 1 and arch != "cnn":
        raise ValueError(f"the {arch} classifier reads 1-D signals; on images ({shape}) use arch 'cnn'")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = CLASSIFIERS[arch][0]() if len(shape) == 1 else Classifier(shape=shape)

    def batch_loss(idx):
        return F.cross_entropy(model(augment(x[idx], gen)), y[idx], label_smoothing=0.05)

    test_accuracy = {}  # fit describes the last epoch, so the accuracy returned is the one logged

    def describe(epoch, _):
        test_accuracy[epoch] = accuracy(model, x_test, y_test)
        return f"{arch} classifier epoch {epoch}: test accuracy {test_accuracy[epoch]:.4f}"

    model = fit(model, len(x), batch_loss, epochs, batch_size, lr, gen, describe, log)
    return model, test_accuracy[epochs]


def save_classifier(model, test_acc, path, dataset=MNIST1D, **extra):
    """Atomic write of the weights, the architecture, the dataset it was trained on and the test accuracy
    measured at training."""
    name = classifier_name(model)
    arch = CLASSIFIERS[name][1](model) | ({} if name == "cnn" else {"name": name})  # the cnn's files stay as they were
    # an MNIST-1D classifier's file stays as it was: a file without a dataset is an MNIST-1D one
    data = {} if dataset == MNIST1D else {"dataset": dataset}
    save_torch({"state_dict": model.state_dict(), "test_acc": test_acc, "arch": arch, **data, **extra}, path)


def load_classifier(path, dataset=None):
    """(classifier in eval mode, the test accuracy recorded when it was trained); classifier_name(model)
    says which architecture it is. Given `dataset`, a classifier trained on another one is refused."""
    fix = f"train it again with `pydiffusion classifier --dataset {dataset or 'NAME'} --out FILE`"
    d = load_torch(path, "classifier", fix)
    if not isinstance(d, dict) or not {"state_dict", "test_acc", "arch"} <= set(d) or not isinstance(d["arch"], dict) \
            or d["arch"].get("name", "cnn") not in CLASSIFIERS:
        raise UnreadableFileError(f"classifier {path} is not a pydiffusion classifier; {fix}")
    if "path" in d:  # what save_noisy_classifier writes
        raise UnreadableFileError(f"classifier {path} is a noise-aware classifier (from `pydiffusion noisy-classifier`, "
                                  f"for --noisy-classifier), not a reference classifier; {fix}")
    trained_on = d.get("dataset", MNIST1D)
    if dataset is not None and trained_on != dataset:
        raise UnreadableFileError(f"classifier {path} was trained on {trained_on}, the run uses {dataset}; {fix}")
    arch = dict(d["arch"])
    build = CLASSIFIERS[arch.pop("name", "cnn")][0]
    model = build_and_load(lambda: build(**arch), d["state_dict"], f"classifier {path}", fix)
    return model.eval(), d["test_acc"]
