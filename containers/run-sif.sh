#!/usr/bin/env bash
# Runs a command inside a SIF image without Apptainer: the primary system partition is mounted
# with squashfuse (or, without FUSE, unpacked with unsquashfs once per image into a cache folder)
# and entered with bubblewrap, read-only,
# as an unprivileged user, with no network, the way `apptainer exec/run/test --containall` would,
# the image's /.singularity.d/env scripts sourced by its own action scripts.
#
# usage: containers/run-sif.sh [options] exec IMAGE.sif COMMAND [ARG...]
#        containers/run-sif.sh [options] run  IMAGE.sif [ARG...]      (the %runscript)
#        containers/run-sif.sh [options] test IMAGE.sif               (the %test section)
#   --bind SRC[:DST]   bind a host folder read-write (DST defaults to SRC), as apptainer --bind
#   --pwd DIR          working directory inside the image (default: / or the first bind's DST)
#   --env KEY=VALUE    set a variable inside (the environment is otherwise clean, as --cleanenv)
#   --user UID[:GID]   run as this user when started as root (default 65534:65534, nobody)
#   --net              keep the host's network (default: none)
#   --unpack           unpack the image (cached per image) even where squashfuse could mount it
#   --unpack-dir DIR   where images are mounted or unpacked (default /tmp/pydiffusion-sif)
# Needs bwrap, squashfuse or unsquashfs (squashfs-tools), and python3; root only to switch to --user.
set -euo pipefail

binds=()
envs=()
pwd_in=""
user="65534:65534"
net=0
unpack_root="${PYDIFFUSION_SIF_UNPACK:-/tmp/pydiffusion-sif}"
unpack=0
while [ $# -gt 0 ]; do
    case "$1" in
        --bind) binds+=("$2"); shift 2 ;;
        --pwd) pwd_in=$2; shift 2 ;;
        --env) envs+=("$2"); shift 2 ;;
        --user) user=$2; shift 2 ;;
        --net) net=1; shift ;;
        --unpack-dir) unpack_root=$2; shift 2 ;;
        --unpack) unpack=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "run-sif.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -ge 2 ] || { echo "usage: run-sif.sh [options] exec|run|test IMAGE.sif [COMMAND...] (--help)" >&2; exit 2; }
action=$1 image=$(realpath "$2"); shift 2
case "$action" in exec|run|test) ;; *) echo "run-sif.sh: action must be exec, run or test" >&2; exit 2 ;; esac
[ "$action" != exec ] || [ $# -ge 1 ] || { echo "run-sif.sh: exec needs a command" >&2; exit 2; }

# --- the primary system partition, unpacked once per image (keyed by its SHA-256) ----------------
read -r offset size < <(python3 - "$image" <<'EOF'
import struct, sys
# SIF, little-endian and packed. Global header: launch[32] magic[10] version[3] arch[3] uuid[16],
# then int64 ctime mtime descriptors_free descriptors_total descriptors_offset descriptors_size ...
# Descriptor: int32 datatype, bool used, uint32 id group link, int64 offset size size_with_padding
# ctime mtime uid gid, name[128], extra[384]; a partition's extra: int32 fstype, int32 parttype, arch[3].
with open(sys.argv[1], "rb") as f:
    head = f.read(128)
    if head[32:41] != b"SIF_MAGIC":
        sys.exit(f"{sys.argv[1]} is not a SIF image")
    _free, total, table_off, table_len = struct.unpack_from("<qqqq", head, 80)
    f.seek(table_off)
    table = f.read(table_len)
each = table_len // total
for i in range(total):
    d = table[i * each:(i + 1) * each]
    datatype, used, _id, _group, _link, off, size = struct.unpack_from("<iBIIIqq", d, 0)
    fstype, parttype = struct.unpack_from("<ii", d, each - 384)
    if used and datatype == 0x4004 and parttype == 2 and fstype == 1:  # squashfs, primary system
        print(off, size)
        break
else:
    sys.exit(f"{sys.argv[1]}: no primary system partition (squashfs)")
EOF
)
# --- the root file system: squashfuse-mounted where FUSE works, else unpacked once per image ----
mkdir -p "$unpack_root"
chmod 755 "$unpack_root"
rootfs=""
if [ "$unpack" = 0 ] && command -v squashfuse >/dev/null && [ -c /dev/fuse ]; then
    mnt=$(mktemp -d "$unpack_root/mnt.XXXXXX")
    chmod 755 "$mnt"
    opts="offset=$offset"
    if [ "$(id -u)" -eq 0 ]; then opts="$opts,allow_other"; fi  # for the user we switch to
    if squashfuse -o "$opts" "$image" "$mnt" 2>/dev/null; then
        rootfs=$mnt
        # only ever unmount and rmdir: a read-only mount point is never recursively removed
        trap 'umount "$mnt" 2>/dev/null || fusermount -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null; rmdir "$mnt" 2>/dev/null' EXIT
    else
        rmdir "$mnt"
    fi
fi
if [ -z "$rootfs" ]; then
    sum=$(sha256sum "$image" | cut -c1-16)
    rootfs="$unpack_root/$sum"
    (
        flock 9
        if [ ! -e "$rootfs/.unpacked" ]; then
            rm -rf "$rootfs.tmp"
            unsquashfs -q -n -no-xattrs -o "$offset" -d "$rootfs.tmp" "$image" >/dev/null
            touch "$rootfs.tmp/.unpacked"
            rm -rf "$rootfs"
            mv "$rootfs.tmp" "$rootfs"
        fi
    ) 9> "$unpack_root/.lock"
fi

# --- bubblewrap: the image read-only, fresh /dev /proc /tmp, binds, no network ------------------
# / is a tmpfs holding the image's top-level entries (bound read-only, symlinks recreated), so a
# bind target missing from the image can be made at the top level, as Apptainer's underlay does
cmd=(bwrap --tmpfs /)
for entry in "$rootfs"/* "$rootfs"/.[!.]*; do
    [ -e "$entry" ] || [ -L "$entry" ] || continue
    name=/$(basename "$entry")
    case "$name" in /dev|/proc|/tmp|/var/tmp|/.unpacked) continue ;; esac
    if [ -L "$entry" ]; then cmd+=(--symlink "$(readlink "$entry")" "$name")
    else cmd+=(--ro-bind "$entry" "$name"); fi
done
cmd+=(--dev /dev --proc /proc --tmpfs /tmp --tmpfs /var/tmp
      --unshare-pid --unshare-ipc --unshare-uts --hostname pydiffusion --die-with-parent --new-session)
[ "$net" = 1 ] || cmd+=(--unshare-net)
first_dst=""
for b in "${binds[@]}"; do
    src=${b%%:*}; dst=${b#*:}; [ "$b" != "$src" ] || dst=$src
    cmd+=(--bind "$(realpath "$src")" "$dst")
    [ -n "$first_dst" ] || first_dst=$dst
done
cmd+=(--remount-ro /)
cmd+=(--chdir "${pwd_in:-${first_dst:-/}}" --clearenv
      --setenv PATH /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
      --setenv HOME /tmp --setenv LANG C.UTF-8 --setenv APPTAINER_CONTAINER "$image"
      --setenv APPTAINER_NAME "$(basename "$image")")
for e in "${envs[@]}"; do cmd+=(--setenv "${e%%=*}" "${e#*=}"); done
case "$action" in
    exec) cmd+=(/.singularity.d/actions/exec "$@") ;;
    run) cmd+=(/.singularity.d/actions/run "$@") ;;
    test) cmd+=(/.singularity.d/actions/test) ;;
esac

if [ "$(id -u)" -eq 0 ] && [ "$user" != 0 ] && [ "$user" != "0:0" ]; then
    uid=${user%%:*}; gid=${user#*:}; [ "$user" != "$uid" ] || gid=$uid
    cmd=(setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all -- "${cmd[@]}")
fi
rc=0
"${cmd[@]}" || rc=$?
exit "$rc"
