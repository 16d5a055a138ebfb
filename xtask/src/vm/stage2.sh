# PID 1 after switch_root, in the overlay on the host's /. Mounts what tests
# expect of a booted machine, runs /run/tracer-vm/cmd.sh (written by the
# host), stores its exit code in the exchange share and powers off.
bb=/run/tracer-vm-init/busybox

kmods=""
for arg in $($bb cat /proc/cmdline); do
    case "$arg" in
    tracer.kmods=*) kmods="${arg#tracer.kmods=}" ;;
    esac
done

mnt() { # type, target, [options]
    $bb mkdir -p "$2"
    $bb mount -t "$1" ${3:+-o "$3"} "$1" "$2" || echo "tracer-vm: cannot mount $1 on $2"
}
mnt devpts /dev/pts gid=5,mode=620,ptmxmode=666
mnt tmpfs /dev/shm mode=1777
mnt bpf /sys/fs/bpf mode=700
mnt tracefs /sys/kernel/tracing
mnt debugfs /sys/kernel/debug
mnt cgroup2 /sys/fs/cgroup
$bb mkdir -p /run/netns /run/lock
$bb ln -sf /proc/self/fd /dev/fd

# This kernel's own modules (extracted on the host) where modprobe looks.
release=$($bb uname -r)
$bb mkdir -p "/lib/modules/$release"
$bb mount --bind "$kmods" "/lib/modules/$release" || echo "tracer-vm: no modules at $kmods"

$bb hostname tracer-vm
$bb ip link set lo up
$bb stty -F /dev/console -onlcr 2>/dev/null

# Markers with this run's token, so the command's own output cannot fake them.
token=$($bb cat /run/tracer-vm/token)
echo "TRACER_VM_START $token"
$bb sh /run/tracer-vm/cmd.sh </dev/null
code=$?
echo "$code" >/run/tracer-vm/exit
$bb sync
printf 'TRACER_VM_END %s\n' "$token"
$bb poweroff -f
