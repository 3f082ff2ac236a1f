"""The package's layout: its wings import one way (cli and the jobs on top, the diffusion math at the bottom) and
no module imports itself back through others. Read from the source with `ast`, so a new module is checked too."""
import ast
import re
from pathlib import Path

import pydiffusion

PACKAGE = Path(pydiffusion.__file__).parent

# each wing's rank, bottom up: a module imports its own wing and wings of a lower rank only
RANKS = {"config": 0, "files": 0, "progress": 0, "data": 1, "diffusion": 2, "nets": 3, "checkpoints": 4,
         "evaluation": 5, "training": 6, "runs": 7, "reporting": 8, "ablations": 9, "cli": 10, "snakemake_script": 10}
# the diffusion math depends on nothing of the package's but config and the labels of the data
DIFFUSION_MAY_IMPORT = {"pydiffusion.config", "pydiffusion.data.labels"}


def modules() -> dict:
    """{dotted name: file} of every module of the package (a package by its __init__.py)."""
    out = {}
    for file in PACKAGE.rglob("*.py"):
        parts = ["pydiffusion", *file.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = file
    return out


def import_graph() -> dict:
    """{module: the package's modules it imports}, at the top or inside a function; `from a import b` counts as
    importing the module a.b where b is one, else a."""
    mods = modules()
    graph = {}
    for name, file in mods.items():
        targets = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{file}: relative import; the package imports by absolute names"
                subs = {f"{node.module}.{a.name}" for a in node.names} & mods.keys()
                targets |= subs if subs else {node.module}
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def wing(module: str) -> str:
    return module.split(".")[1]


def cycles(graph: dict) -> list:
    """One cycle (as a list of modules) per strongly connected part with more than one module."""
    found, state, stack = [], {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(graph):
        if u not in state:
            visit(u)
    return found


def test_the_graph_is_read():
    graph = import_graph()
    assert "pydiffusion.diffusion.denoiser" in graph["pydiffusion.training.loop"]
    assert "pydiffusion.diffusion.ops" in graph["pydiffusion.diffusion.denoiser"]  # `from pydiffusion.diffusion import ops`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_every_module_belongs_to_a_ranked_wing():
    unranked = sorted(m for m in modules() if m != "pydiffusion" and wing(m) not in RANKS)
    assert not unranked, f"give these wings a rank in RANKS: {unranked}"


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_imports_run_down_the_layers():
    upward = [f"{m} -> {t}" for m, targets in import_graph().items() if m != "pydiffusion" for t in targets
              if t == "pydiffusion" or (wing(t) != wing(m) and RANKS[wing(t)] >= RANKS[wing(m)])]
    assert not upward, "imports from a wing to one of the same or a higher rank:\n" + "\n".join(sorted(upward))


def test_the_diffusion_math_stands_on_config_and_the_labels_only():
    graph = import_graph()
    outside = sorted(f"{m} -> {t}" for m in graph if m.startswith("pydiffusion.diffusion") for t in graph[m]
                     if not t.startswith("pydiffusion.diffusion") and t not in DIFFUSION_MAY_IMPORT)
    assert not outside, outside


def test_each_wing_names_its_modules():
    for package, file in modules().items():
        if file.name != "__init__.py" or package == "pydiffusion":
            continue
        doc = ast.get_docstring(ast.parse(file.read_text())) or ""
        for module in sorted(m for m in modules() if m.rsplit(".", 1)[0] == package):
            assert re.search(rf"\b{module.rsplit('.', 1)[1]}\b", doc), f"{file}'s docstring does not name its module {module}"


def test_the_public_names_and_the_version():
    from importlib.metadata import version

    assert pydiffusion.__version__ == version("pydiffusion-mnist1d")
    for name in pydiffusion.__all__:
        assert getattr(pydiffusion, name) is not None, name
    assert pydiffusion.load_run.__module__ == "pydiffusion.runs"
    try:
        pydiffusion.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
