#!/bin/busybox sh
# PID 1 of the initramfs xtask vm builds (busybox-static + a few modules).
# Mounts the host's / (virtio-9p, read-only) under a tmpfs-backed overlay, so
# the guest can write anywhere without touching the host, then switch_roots
# into it and runs stage2 there. Kernel command line: tracer.kmods=<host dir
# of this kernel's modules>.
/bin/busybox --install -s /bin
export PATH=/bin

die() {
    echo "tracer-vm init: $*"
    poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# Modules in dependency order, decompressed on the host (busybox insmod does
# not read .ko.xz); the ones built into this kernel are not listed.
while read -r module; do
    insmod "/modules/$module" || die "insmod $module failed"
done </modules/order

p9="trans=virtio,version=9p2000.L,msize=512000"
mkdir -p /lower /rw /newroot
# cache=loose: mmap and none are 3-5x slower for builds and test binaries.
mount -t 9p -o "$p9,cache=loose,ro" hostroot /lower || die "cannot mount the host's / (9p)"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot ||
    die "cannot mount the overlay on the host's /"

# Fresh /run: the host's holds its pid files and /run/netns entries.
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
mkdir -p /newroot/run/tracer-vm /newroot/run/tracer-vm-init
# The per-run exchange directory: the command to run, its exit code.
mount -t 9p -o "$p9,cache=none" xchg /newroot/run/tracer-vm || die "cannot mount the exchange share"
cp /bin/busybox /stage2 /newroot/run/tracer-vm-init/

for fs in proc sys dev; do
    mount --move "/$fs" "/newroot/$fs"
done
exec switch_root /newroot /run/tracer-vm-init/busybox sh /run/tracer-vm-init/stage2
