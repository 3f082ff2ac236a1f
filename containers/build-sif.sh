#!/usr/bin/env bash
# Builds the CPU image from containers/cpu.def into a real SIF file without Apptainer, doing what
# `apptainer build` does for a debootstrap definition:
#   1. debootstrap (minbase) of the definition's OSVersion with its Include packages -- cached as a
#      tarball keyed by release, packages and architecture, so reruns skip it;
#   2. %files copied in from the source tree; %post (which runs containers/install.sh) run as root
#      inside the root file system (bubblewrap as a chroot, with network, private mounts);
#   3. /.singularity.d written as Apptainer writes it: env/ (with %environment), runscript, test,
#      labels.json, actions/ (exec, run, shell, start, test), libs/, the definition, runscript.help;
#   4. mksquashfs (zstd level 3), then siftool: the definition (Def.FILE), the labels (JSON.Generic)
#      and the root file system as the primary system partition (squashfs, amd64), behind SIF's
#      launch line `#!/usr/bin/env run-singularity`.
#
# usage: containers/build-sif.sh [options] OUTPUT.sif
#   --def FILE     definition file (default: containers/cpu.def beside this script)
#   --src DIR      build context: the source tree %files copies from (default: the repository root)
#   --cache DIR    debootstrap tarball and pip cache (default: $XDG_CACHE_HOME or ~/.cache, /pydiffusion/containers)
#   --rootfs DIR   keep the finished root file system here (default: a temporary folder, removed)
#   --build-arg KEY=VALUE   as apptainer build; DEBIAN_MIRROR defaults to this host's apt mirror,
#                  TORCH_INDEX to "" (torch comes from this host's pip configuration),
#                  GIT_COMMIT to the source tree's HEAD (with -dirty when it has changes)
#   --no-host-pip  do not hand this host's pip configuration (indexes, find-links, CA bundle) to pip
#   --notest       skip the %test section (apptainer build --notest)
# Needs root, debootstrap, bwrap, mksquashfs (squashfs-tools), siftool and python3.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
def="$here/cpu.def"
src=$(cd "$here/.." && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pydiffusion/containers"
keep_rootfs=""
host_pip=1
run_test=1
declare -A args=()
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --def) def=$(realpath "$2"); shift 2 ;;
        --src) src=$(realpath "$2"); shift 2 ;;
        --cache) cache=$2; shift 2 ;;
        --rootfs) keep_rootfs=$2; shift 2 ;;
        --build-arg) args["${2%%=*}"]="${2#*=}"; shift 2 ;;
        --no-host-pip) host_pip=0; shift ;;
        --notest) run_test=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "build-sif.sh: unknown option $1" >&2; exit 2 ;;
        *) out=$1; shift ;;
    esac
done
[ -n "$out" ] || { echo "usage: build-sif.sh [options] OUTPUT.sif (--help)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "build-sif.sh: needs root (debootstrap, and root inside the image for %post)" >&2; exit 1; }
for tool in debootstrap bwrap mksquashfs siftool python3; do
    command -v "$tool" >/dev/null || { echo "build-sif.sh: $tool not found (apt-get install debootstrap bubblewrap squashfs-tools siftool)" >&2; exit 1; }
done
out=$(realpath -m "$out")
t_start=$SECONDS
phase() { echo "build-sif.sh: [$((SECONDS - t_start)) s] $*"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/build-sif.XXXXXX")
# bwrap's mounts live in its own namespace and end with it: nothing of the host is ever mounted
# under $work, so removing it is safe whenever the script stops
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

# --- the definition, with its build arguments ---------------------------------------------------
if [ -z "${args[DEBIAN_MIRROR]+x}" ]; then
    mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || { echo "build-sif.sh: no Debian mirror found in this host's apt sources; give --build-arg DEBIAN_MIRROR=URL" >&2; exit 1; }
    args[DEBIAN_MIRROR]=$mirror
fi
[ -n "${args[TORCH_INDEX]+x}" ] || args[TORCH_INDEX]=""
if [ -z "${args[GIT_COMMIT]+x}" ]; then
    commit=$(git -C "$src" rev-parse HEAD 2>/dev/null || echo unknown)
    if [ "$commit" != unknown ] && [ -n "$(git -C "$src" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        commit="$commit-dirty"
    fi
    args[GIT_COMMIT]=$commit
fi
render_args=()
for k in "${!args[@]}"; do render_args+=(--build-arg "$k=${args[$k]}"); done
python3 "$here/deffile.py" render "$def" "$work/def" "${render_args[@]}"
header() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$work/def/header.json" "$1"; }
[ "$(header bootstrap)" = debootstrap ] || { echo "build-sif.sh: only Bootstrap: debootstrap definitions (use apptainer build for $def)" >&2; exit 1; }
release=$(header osversion)
mirror=$(header mirrorurl)
include=$(header include | tr ' ,' '\n\n' | sed '/^$/d' | sort -u | paste -sd, -)
arch=$(dpkg --print-architecture)
phase "definition $def: $release from $mirror, include $include, commit ${args[GIT_COMMIT]}"

# --- 1. the base root file system (cached) -------------------------------------------------------
mkdir -p "$cache"
key=$(printf '%s\n' "$release" "$include" "$arch" "$(dpkg-query -W -f '${Version}' debootstrap)" | sha256sum | cut -c1-16)
if command -v zstd >/dev/null; then
    compress=(zstd -q -T0 -3); decompress=(zstd -q -dc); base="$cache/debootstrap-$release-$arch-$key.tar.zst"
else
    compress=(gzip -1); decompress=(gzip -dc); base="$cache/debootstrap-$release-$arch-$key.tar.gz"
fi
mkdir -p "$rootfs"
(
    flock 9
    if [ ! -s "$base" ]; then
        phase "debootstrap --variant=minbase $release (cached afterwards as $base)"
        nice -n 10 debootstrap --variant=minbase --include="$include" "$release" "$work/base" "$mirror" \
            > "$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
        chroot "$work/base" apt-get clean
        rm -rf "$work/base/var/lib/apt/lists/"*
        tar -C "$work/base" --numeric-owner -cf - . | nice -n 10 "${compress[@]}" > "$base.tmp"
        mv "$base.tmp" "$base"
        rm -rf "$work/base"
    fi
) 9> "$cache/.lock"
phase "unpacking the base $(basename "$base")"
"${decompress[@]}" "$base" | tar -C "$rootfs" --numeric-owner -xf -

# --- 2. %files and %post -----------------------------------------------------------------------
while IFS=$'\t' read -r from to; do
    [ -e "$src/$from" ] || { echo "build-sif.sh: %files: $from is not in $src" >&2; exit 1; }
    mkdir -p "$rootfs$(dirname "$to")"
    cp -rL "$src/$from" "$rootfs$to"
done < "$work/def/files.txt"
find "$rootfs/opt/pydiffusion/src" \( -name __pycache__ -o -name '*.so' -o -name '*.egg-info' \) -prune -exec rm -rf {} + 2>/dev/null || true

# the build runs as root in the image's root file system; network on, host mounts private to it
sandbox=(bwrap --bind "$rootfs" / --dev /dev --proc /proc --tmpfs /tmp --tmpfs /run
         --ro-bind /etc/resolv.conf /etc/resolv.conf --die-with-parent --clearenv
         --setenv PATH /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --setenv HOME /root
         --setenv LC_ALL C.UTF-8 --setenv TERM dumb)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY MAX_JOBS; do
    if [ -n "${!v:-}" ]; then sandbox+=(--setenv "$v" "${!v}"); fi
done
host_mountpoints=()
if [ "$host_pip" = 1 ]; then
    # this host's pip settings (config files and PIP_* variables) as PIP_* variables; the local
    # paths they name (wheel folders, file:// indexes, constraints, the CA bundle) are bound
    # read-only at the same place (index pages link to absolute file:// paths), and the mount
    # points this creates in the root file system are removed after %post
    while IFS= read -r -d '' kv; do
        name=${kv%%=*}; value=${kv#*=}
        set -f
        for tok in $value; do
            path=${tok#file://}
            path=${path%/}
            if [ "${path:0:1}" = / ] && [ -e "$path" ]; then
                # an index's pages link to files beside its simple/ folder: bind the index root
                if [ "$(basename "$path")" = simple ]; then path=$(dirname "$path"); fi
                top=$path
                while [ ! -e "$rootfs$(dirname "$top")" ]; do top=$(dirname "$top"); done
                if [ ! -e "$rootfs$top" ]; then host_mountpoints+=("$top"); fi
                sandbox+=(--ro-bind "$path" "$path")
            fi
        done
        set +f
        sandbox+=(--setenv "$name" "$value")
    done < <(python3 - <<'EOF'
import configparser, os, sys
files = ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", os.path.expanduser("~/.pip/pip.conf"),
         os.path.expanduser("~/.config/pip/pip.conf")]
if os.environ.get("PIP_CONFIG_FILE"):
    files.append(os.environ["PIP_CONFIG_FILE"])
settings = {}
for path in files:
    cp = configparser.RawConfigParser()
    try:
        cp.read(path)
    except (OSError, configparser.Error):
        continue
    for section in ("global", "install"):
        if cp.has_section(section):
            for key, value in cp.items(section):
                settings["PIP_" + key.upper().replace("-", "_")] = " ".join(value.split())
for key, value in os.environ.items():
    if key.startswith("PIP_") and key != "PIP_CONFIG_FILE":
        settings[key] = value
local_cas = os.path.isdir("/usr/local/share/ca-certificates") and os.listdir("/usr/local/share/ca-certificates")
if "PIP_CERT" not in settings and local_cas:
    settings["PIP_CERT"] = "/etc/ssl/certs/ca-certificates.crt"  # the host's bundle, with its local CAs
for key, value in sorted(settings.items()):
    sys.stdout.write(f"{key}={value}\0")
EOF
)
fi
# pip's cache lives beside the debootstrap tarball (downloads and built wheels, for reruns)
mkdir -p "$cache/pip"
sandbox+=(--bind "$cache/pip" /tmp/pip-cache --setenv PIP_CACHE_DIR /tmp/pip-cache)
sandbox+=(--setenv APPTAINER_ROOTFS / --setenv APPTAINER_LABELS /.build.labels
          --setenv APPTAINER_ENVIRONMENT /.singularity.d/env/91-environment.sh
          --setenv SINGULARITY_LABELS /.build.labels
          --setenv SINGULARITY_ENVIRONMENT /.singularity.d/env/91-environment.sh)

mkdir -p "$rootfs/.singularity.d/env" "$rootfs/.singularity.d/actions" "$rootfs/.singularity.d/libs"
: > "$rootfs/.build.labels"
cp "$work/def/post" "$rootfs/.post.sh"
phase "%post (containers/install.sh) in the root file system"
nice -n 10 "${sandbox[@]}" /bin/sh -e -x /.post.sh
rm -f "$rootfs/.post.sh"
# bwrap's mounts ended with it: these are the empty mount points it made
for m in "${host_mountpoints[@]}"; do rm -rf "${rootfs:?}$m"; done

# --- 3. /.singularity.d ----------------------------------------------------------------------
phase "writing /.singularity.d"
sd="$rootfs/.singularity.d"
source_env='for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done
'
printf '#!/bin/sh\n\n%s\nexec "$@"\n' "$source_env" > "$sd/actions/exec"
printf '#!/bin/sh\n\n%s\nif test -x /.singularity.d/runscript; then\n    exec /.singularity.d/runscript "$@"\nfi\necho "No runscript found, executing /bin/sh"\nexec /bin/sh "$@"\n' \
    "$source_env" > "$sd/actions/run"
printf '#!/bin/sh\n\n%s\nif test -n "${APPTAINER_SHELL:-}" -a -x "${APPTAINER_SHELL:-}"; then\n    exec "$APPTAINER_SHELL" "$@"\nelif test -x /bin/bash; then\n    SHELL=/bin/bash\n    PS1="Apptainer> "\n    export SHELL PS1\n    exec /bin/bash --norc "$@"\nfi\nSHELL=/bin/sh\nexport SHELL\nexec /bin/sh "$@"\n' \
    "$source_env" > "$sd/actions/shell"
printf '#!/bin/sh\n\n# tell PID 1 to continue\nkill -CONT 1\n\n%s\nif test -x /.singularity.d/startscript; then\n    exec /.singularity.d/startscript\nfi\n' \
    "$source_env" > "$sd/actions/start"
printf '#!/bin/sh\n\n%s\nif test -x /.singularity.d/test; then\n    exec /.singularity.d/test "$@"\nfi\necho "No test found in container, executing /bin/sh -c true"\nexec /bin/sh -c true\n' \
    "$source_env" > "$sd/actions/test"
printf '#!/bin/sh\n# base environment (empty)\n' > "$sd/env/01-base.sh"
{ printf '#!/bin/sh\n# Custom environment shell code should follow\n\n'; cat "$work/def/environment" 2>/dev/null || true; } > "$sd/env/90-environment.sh"
printf '#!/bin/sh\n# SCIF apps: none in this image\n' > "$sd/env/95-apps.sh"
# shellcheck disable=SC2016
printf '#!/bin/sh\nif [ -z "${LD_LIBRARY_PATH:-}" ]; then\n    LD_LIBRARY_PATH=/.singularity.d/libs\nelse\n    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/.singularity.d/libs"\nfi\nPS1="Apptainer> "\nexport LD_LIBRARY_PATH PS1\n' > "$sd/env/99-base.sh"
# shellcheck disable=SC2016
printf '#!/bin/sh\nif [ -n "${SING_USER_DEFINED_PREPEND_PATH:-}" ]; then\n    PATH="${SING_USER_DEFINED_PREPEND_PATH}:${PATH}"\nfi\nif [ -n "${SING_USER_DEFINED_APPEND_PATH:-}" ]; then\n    PATH="${PATH}:${SING_USER_DEFINED_APPEND_PATH}"\nfi\nif [ -n "${SING_USER_DEFINED_PATH:-}" ]; then\n    PATH="${SING_USER_DEFINED_PATH}"\nfi\nunset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH\nexport PATH\n' \
    > "$sd/env/99-runtimevars.sh"
{ printf '#!/bin/sh\n\n'; cat "$work/def/runscript"; } > "$sd/runscript"
printf '#!/bin/sh\n' > "$sd/startscript"
if [ -f "$work/def/test" ]; then { printf '#!/bin/sh\n\n'; cat "$work/def/test"; } > "$sd/test"; fi
if [ -f "$work/def/help" ]; then cp "$work/def/help" "$sd/runscript.help"; fi
cp "$work/def/Singularity" "$sd/Singularity"
chmod 755 "$sd/actions/"* "$sd/env/"*.sh "$sd/runscript" "$sd/startscript" "$sd/test" 2>/dev/null || true
python3 - "$work/def/labels.json" "$rootfs/.build.labels" "$sd/labels.json" "$work/def/header.json" <<'EOF'
import json, sys, time
labels = json.load(open(sys.argv[1]))
for line in open(sys.argv[2]):
    key, _, value = line.strip().partition(" ")
    if key:
        labels[key] = value.strip()
header = json.load(open(sys.argv[4]))
labels.update({
    "org.label-schema.schema-version": "1.0",
    "org.label-schema.build-arch": "amd64",
    "org.label-schema.build-date": time.strftime("%A_%-d_%B_%Y_%H:%M:%S_%Z"),
    "org.label-schema.usage": "/.singularity.d/runscript.help",
    "org.label-schema.usage.singularity.runscript.help": "/.singularity.d/runscript.help",
    "org.label-schema.usage.singularity.deffile.bootstrap": header["bootstrap"],
    "org.label-schema.usage.singularity.deffile.osversion": header.get("osversion", ""),
    "org.label-schema.usage.singularity.deffile.include": header.get("include", ""),
    "org.pydiffusion.built-by": "containers/build-sif.sh (offline, without Apptainer)",
})
json.dump(labels, open(sys.argv[3], "w"), indent=4)
EOF
rm -f "$rootfs/.build.labels"
ln -sfn .singularity.d/runscript "$rootfs/singularity"
for a in exec run shell test; do ln -sfn ".singularity.d/actions/$a" "$rootfs/.$a"; done
ln -sfn .singularity.d/env/90-environment.sh "$rootfs/environment"
# Apptainer binds the host's over these at run time
: > "$rootfs/etc/hosts"
: > "$rootfs/etc/resolv.conf"
mkdir -p "$rootfs/home" "$rootfs/tmp" "$rootfs/var/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/root"
chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"

if [ "$run_test" = 1 ] && [ -x "$sd/test" ]; then
    phase "%test (no network)"
    bwrap --ro-bind "$rootfs" / --dev /dev --proc /proc --tmpfs /tmp --tmpfs /root --unshare-net --die-with-parent \
        --clearenv --setenv PATH /usr/local/bin:/usr/bin:/bin --setenv HOME /root --setenv LC_ALL C.UTF-8 \
        /.singularity.d/actions/test
fi

# --- 4. squashfs and SIF -------------------------------------------------------------------
phase "mksquashfs (zstd level 3), $(du -sh "$rootfs" | cut -f1) of files"
nice -n 10 mksquashfs "$rootfs" "$work/rootfs.squashfs" -noappend -all-root -comp zstd -Xcompression-level 3 \
    -no-progress > "$work/mksquashfs.log" 2>&1 || { cat "$work/mksquashfs.log" >&2; exit 1; }
phase "SIF: siftool new, add Def.FILE, JSON.Generic, primary system partition"
mkdir -p "$(dirname "$out")"
rm -f "$out.tmp"
siftool new "$out.tmp"
siftool add --groupid 1 --datatype 1 --filename Singularity "$out.tmp" "$work/def/Singularity"
siftool add --groupid 1 --datatype 6 --filename labels.json "$out.tmp" "$sd/labels.json"
siftool add --groupid 1 --datatype 4 --parttype 2 --partfs 1 --partarch 2 "$out.tmp" "$work/rootfs.squashfs"
# siftool leaves the 32-byte launch field empty; Apptainer writes this line there, which lets
# `./image.sif args` run the image through run-singularity
printf '#!/usr/bin/env run-singularity\n' | dd of="$out.tmp" bs=32 count=1 conv=notrunc status=none
chmod 755 "$out.tmp"
mv -f "$out.tmp" "$out"
if [ -n "$keep_rootfs" ]; then
    rm -rf "$keep_rootfs"
    mkdir -p "$(dirname "$keep_rootfs")"
    mv "$rootfs" "$keep_rootfs"
fi
phase "wrote $out ($(du -h "$out" | cut -f1))"
