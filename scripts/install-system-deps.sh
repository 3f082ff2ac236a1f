#!/usr/bin/env bash
# System packages the full test suite needs: a one-node SLURM (slurm-wlm, munge) and the
# offline Apptainer image build (debootstrap, squashfs-tools, siftool, bubblewrap; squashfuse mounts
# the image instead of unpacking it).
# Installs only what is missing; needs root (or sudo) for apt-get.
set -euo pipefail
packages=(slurm-wlm munge debootstrap squashfs-tools siftool bubblewrap squashfuse)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
