#!/usr/bin/env bash
# Builds Blixard's default guest image from Debian packages only:
#   OUT/default/vmlinux     kernel (ELF, booted through PVH; bzImage if extraction fails)
#   OUT/default/initrd.img  busybox initramfs with a small /init
#   OUT/default/cmdline     kernel command line (the daemon adds host-specific flags)
# Nothing is installed into the host's /boot: the kernel package is
# downloaded and unpacked with dpkg-deb.
#
# Needs: apt-get, dpkg-deb, busybox-static, lz4, gzip (all Debian packages).
# Usage: assets/guest/build.sh OUT_DIR
set -euo pipefail

out=${1:?usage: build.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
dest="$out/default"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

need() { command -v "$1" >/dev/null 2>&1 || { echo "build.sh: $1 is missing (install: $2)" >&2; exit 3; }; }
need apt-get apt
need dpkg-deb dpkg
need lz4 lz4
need gzip gzip
busybox=/bin/busybox
[ -x "$busybox" ] && "$busybox" --list | grep -x cpio >/dev/null || { echo "build.sh: a static busybox with cpio is missing (install: busybox-static)" >&2; exit 3; }

# Resolve the current cloud kernel package through its metapackage: the ABI
# name changes with security updates and old ones leave the mirror.
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
  echo "build.sh: cannot resolve linux-image-cloud-amd64 (run apt-get update)" >&2
  exit 3
fi
echo "build.sh: kernel package $pkg"
(cd "$work" && apt-get download -q "$pkg" >/dev/null)
dpkg-deb -x "$work"/linux-image-*.deb "$work/pkg"
vmlinuz=$(ls "$work"/pkg/boot/vmlinuz-* | head -n 1)
kver=${vmlinuz##*/vmlinuz-}

mkdir -p "$dest"
# The cloud kernel's bzImage carries an LZ4 (legacy frame) payload: unpack it
# to the ELF vmlinux, which boots through PVH about 1 s faster under TCG.
off=$(grep -obUaP '\x02\x21\x4c\x18' "$vmlinuz" | head -n 1 | cut -d: -f1 || true)
kernel="$dest/vmlinux"
if [ -n "$off" ]; then
  tail -c "+$((off + 1))" "$vmlinuz" | lz4 -dc > "$work/vmlinux" 2>/dev/null || true
fi
if [ -s "$work/vmlinux" ] && [ "$(head -c 4 "$work/vmlinux" | od -An -tx1 | tr -d ' ')" = "7f454c46" ]; then
  mv "$work/vmlinux" "$kernel"
else
  echo "build.sh: could not unpack vmlinux; using the bzImage" >&2
  cp "$vmlinuz" "$kernel"
fi

# The initramfs: busybox, the ACPI button module if the kernel has it as a
# module, and our /init.
root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,lib/modules}
cp "$busybox" "$root/bin/busybox"
# button: the ACPI power button driver; evdev: exposes it as /dev/input/eventN.
for mod in button evdev; do
  f=$(find "$work/pkg/lib/modules/$kver" -name "$mod.ko*" | head -n 1)
  if [ -n "$f" ]; then
    case "$f" in
      *.xz) xz -dc "$f" > "$root/lib/modules/$mod.ko" ;;
      *.zst) zstd -qdc "$f" > "$root/lib/modules/$mod.ko" ;;
      *) cp "$f" "$root/lib/modules/$mod.ko" ;;
    esac
  fi
done
install -m 0755 "$here/init" "$root/init"
(cd "$root" && find . | "$busybox" cpio -H newc -o 2>/dev/null) | gzip -9 > "$dest/initrd.img"

echo "console=ttyS0 quiet panic=-1 pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd cryptomgr.notests random.trust_cpu=on rdinit=/init" > "$dest/cmdline"
echo "$kver" > "$dest/kernel-version"
echo "build.sh: built $dest ($(du -sh "$dest" | cut -f1))"
