"""A small parser for Apptainer definition files, as Apptainer reads them.

Used by build-sif.sh (which builds an image from containers/cpu.def without Apptainer) and by
tests/system/test_container.py (so that a syntax error in either definition file fails CI):

    python3 containers/deffile.py check containers/cpu.def containers/gpu.def
    python3 containers/deffile.py render containers/cpu.def OUTDIR --build-arg KEY=VALUE ...

`render` writes the header (header.json), the %files pairs (files.txt), each script section as a
file (post.sh, environment.sh, runscript, test, help...) and the labels (labels.json), with the
build arguments ({{ NAME }}, defaults from %arguments) substituted.
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

SECTIONS = {"arguments", "setup", "files", "post", "environment", "runscript", "startscript", "test",
            "labels", "help"}
APP_SECTIONS = {"appinstall", "appfiles", "appenv", "apprun", "applabels", "apptest", "apphelp", "appstart"}
SHELL_SECTIONS = {"setup", "post", "environment", "runscript", "startscript", "test"}
HEADER_KEYS = {
    "docker": {"bootstrap", "from", "registry", "namespace", "includecmd"},
    "debootstrap": {"bootstrap", "osversion", "mirrorurl", "include"},
    "localimage": {"bootstrap", "from"},
    "library": {"bootstrap", "from", "library", "fingerprints"},
    "scratch": {"bootstrap"},
}
ARG = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)\s*}}")


class DefError(ValueError):
    pass


class Definition:
    """header: {key (lower case): value}; sections: {name: [lines]} (repeated sections appended)."""

    def __init__(self, path, build_args=None):
        self.path = path
        with open(path) as f:
            self.text = f.read()
        self.header, self.sections = {}, {}
        self._split(self.text)
        self.arguments = self._arguments()
        self.arguments.update(build_args or {})
        self.used_args = sorted(set(ARG.findall(self.text)))

    def _split(self, text):
        current = None
        for n, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if line.startswith("%"):
                name = stripped[1:].split()[0].lower() if stripped[1:].split() else ""
                if name not in SECTIONS and name not in APP_SECTIONS:
                    raise DefError(f"{self.path}:{n}: unknown section %{name}")
                current = name
                self.sections.setdefault(name, [])
                continue
            if current is None:  # the header: "Key: value", comments and blank lines
                if not stripped or stripped.startswith("#"):
                    continue
                key, sep, value = stripped.partition(":")
                if not sep or not key.strip() or " " in key.strip():
                    raise DefError(f"{self.path}:{n}: header line is not 'Key: value': {stripped!r}")
                key = key.strip().lower()
                if not self.header and key != "bootstrap":
                    raise DefError(f"{self.path}:{n}: Bootstrap must be the first header keyword")
                if key in self.header:
                    raise DefError(f"{self.path}:{n}: header keyword {key!r} given twice")
                self.header[key] = value.strip()
            else:
                self.sections[current].append(line)
        if "bootstrap" not in self.header:
            raise DefError(f"{self.path}: no Bootstrap header")
        agent = self.header["bootstrap"].lower()
        if agent not in HEADER_KEYS:
            raise DefError(f"{self.path}: unsupported Bootstrap agent {agent!r}")
        unknown = set(self.header) - HEADER_KEYS[agent]
        if unknown:
            raise DefError(f"{self.path}: header keywords {sorted(unknown)} are not valid for Bootstrap: {agent}")
        if agent in ("docker", "localimage", "library") and not self.header.get("from"):
            raise DefError(f"{self.path}: Bootstrap: {agent} needs From:")
        if agent == "debootstrap" and not (self.header.get("osversion") and self.header.get("mirrorurl")):
            raise DefError(f"{self.path}: Bootstrap: debootstrap needs OSVersion: and MirrorURL:")

    def _arguments(self):
        args = {}
        for line in self.sections.get("arguments", []):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            key, sep, value = s.partition("=")
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
                raise DefError(f"{self.path}: %arguments line is not NAME=value: {s!r}")
            args[key.strip()] = value.strip().strip('"')
        return args

    def substitute(self, text):
        def value(m):
            if m.group(1) not in self.arguments:
                raise DefError(f"{self.path}: build argument {m.group(1)} has no value (give --build-arg "
                               f"{m.group(1)}=... or a default in %arguments)")
            return self.arguments[m.group(1)]
        return ARG.sub(value, text)

    def body(self, name, substitute=True):
        """A section's text with the common indentation removed and build arguments substituted."""
        lines = self.sections.get(name, [])
        indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
        cut = min(indents) if indents else 0
        text = "\n".join(line[cut:] for line in lines).strip("\n") + "\n"
        return self.substitute(text) if substitute else text

    def rendered_header(self):
        return {k: self.substitute(v) for k, v in self.header.items()}

    def files(self, substitute=True):
        pairs = []
        for line in self.body("files", substitute).splitlines():
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            parts = shlex.split(s)
            if len(parts) not in (1, 2):
                raise DefError(f"{self.path}: %files line is not 'source [destination]': {s!r}")
            pairs.append((parts[0], parts[-1]))
        return pairs

    def labels(self):
        labels = {}
        for line in self.body("labels").splitlines():
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            key, _, value = s.partition(" ")
            if not value.strip():
                raise DefError(f"{self.path}: %labels line is not 'name value': {s!r}")
            labels[key] = value.strip()
        return labels

    def check(self, root=None):
        """What Apptainer would reject before building, and the shell syntax (sh -n) of each script.
        Returns the build arguments that have no value (a build must give them)."""
        missing = [a for a in self.used_args if a not in self.arguments]
        for name in sorted(SHELL_SECTIONS & set(self.sections)):
            script = ARG.sub("x", self.body(name, substitute=False))
            with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
                f.write(script)
            try:
                r = subprocess.run(["sh", "-n", f.name], capture_output=True, text=True)
            finally:
                os.unlink(f.name)
            if r.returncode:
                raise DefError(f"{self.path}: %{name}: shell syntax error: {r.stderr.strip()}")
        for line in self.body("labels", substitute=False).splitlines():
            if line.strip() and not line.strip().startswith("#") and len(line.split(None, 1)) < 2:
                raise DefError(f"{self.path}: %labels line is not 'name value': {line.strip()!r}")
        for src, _ in self.files(substitute=False):
            if root and not os.path.exists(os.path.join(root, src)):
                raise DefError(f"{self.path}: %files source {src!r} is not in {root}")
        if not self.body("runscript", substitute=False).strip():
            raise DefError(f"{self.path}: no %runscript")
        return missing


def render(defn, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "header.json"), "w") as f:
        json.dump(defn.rendered_header(), f, indent=2)
    with open(os.path.join(out, "files.txt"), "w") as f:
        for src, dst in defn.files():
            f.write(f"{src}\t{dst}\n")
    for name in ("setup", "post", "environment", "runscript", "startscript", "test", "help"):
        if name in defn.sections:
            with open(os.path.join(out, name), "w") as f:
                f.write(defn.body(name))
    with open(os.path.join(out, "labels.json"), "w") as f:
        json.dump(defn.labels(), f, indent=2)
    with open(os.path.join(out, "Singularity"), "w") as f:  # the definition as built
        f.write(defn.substitute(defn.text))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="parse and syntax-check definition files")
    c.add_argument("files", nargs="+")
    c.add_argument("--root", help="check that %%files sources exist relative to this folder")
    r = sub.add_parser("render", help="write a definition's parts into a folder")
    r.add_argument("file")
    r.add_argument("out")
    r.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    a = p.parse_args(argv)
    try:
        if a.cmd == "check":
            for path in a.files:
                defn = Definition(path)
                missing = defn.check(a.root)
                need = f" (build arguments without defaults: {', '.join(missing)})" if missing else ""
                print(f"ok  {path}: Bootstrap {defn.header['bootstrap']}, sections "
                      f"{', '.join(sorted(defn.sections))}{need}")
        else:
            args = dict(kv.split("=", 1) for kv in a.build_arg)
            defn = Definition(a.file, args)
            defn.check()
            render(defn, a.out)
    except DefError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
