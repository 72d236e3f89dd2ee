# Shared helpers of the qlab initramfs scripts (busybox sh), installed as /lib/qlab/lib.sh.
# Sourced by /init of the test guest and of the bench host, and by the console launchers.

QLAB_KVER=$(uname -r)
QLAB_MODDIR=/lib/modules/$QLAB_KVER

# Prints the value of KEY=VALUE from the kernel command line (the last one wins) and
# succeeds; fails when KEY is absent. Double quotes group words, as the kernel parses them:
# qlab.ready="guest one ready" gives `guest one ready`.
cmdline_get() {
	awk -v key="$1" '
	{
		s = $0; n = length(s); i = 1
		while (i <= n) {
			while (i <= n && substr(s, i, 1) == " ") i++
			tok = ""; inq = 0
			while (i <= n) {
				c = substr(s, i, 1)
				if (c == "\"") { inq = !inq; i++; continue }
				if (c == " " && !inq) break
				tok = tok c; i++
			}
			if (index(tok, key "=") == 1) { val = substr(tok, length(key) + 2); found = 1 }
			else if (tok == key) { val = ""; found = 1 }
		}
	}
	END { if (found) print val; exit !found }' /proc/cmdline
}

# Prints the value of KEY from the kernel command line, or DEFAULT when it is absent.
cmdline_or() {
	cmdline_get "$1" || printf '%s\n' "$2"
}

# Mounts what every qlab initramfs needs: proc, sysfs, devtmpfs (so /dev/vfio/* and hot-
# plugged /dev/sdX appear by themselves), devpts, and tmpfs on /tmp and /run.
qlab_mount_basics() {
	mkdir -p /proc /sys /dev /tmp /run /root
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs -o mode=0755 devtmpfs /dev 2>/dev/null || true
	mkdir -p /dev/pts /dev/shm
	mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
	mount -t tmpfs -o mode=1777 tmpfs /dev/shm
	mount -t tmpfs -o mode=1777 tmpfs /tmp
	mount -t tmpfs -o mode=0755 tmpfs /run
}

# Module parameters for module NAME: those in QLAB_MODPARAMS_<name> (set by /init, e.g.
# vfio_pci's nointxmask), then every NAME.KEY=VALUE on the kernel command line, the way
# kmod's modprobe honours them (the kernel itself ignores them for loadable modules).
qlab_module_params() {
	name=$(echo "$1" | tr - _)
	eval "printf '%s ' \$QLAB_MODPARAMS_$name"
	tr ' ' '\n' </proc/cmdline | tr -d '"' | awk -v m="$name" '{
		dot = index($0, ".")
		if (dot > 1) { mod = substr($0, 1, dot - 1); gsub("-", "_", mod); if (mod == m) printf "%s ", substr($0, dot + 1) }
	}'
}

# Loads the modules listed in /lib/qlab/modules.load ("NAME PATH" lines, dependencies
# first, written by images/build.sh) with insmod, skipping those already present.
# qlab.modules=A,B,... on the kernel command line loads only those (name their dependencies
# too): every insmod costs seconds in a guest under TCG inside TCG (the nested bench's L2).
# Module parameters are looked up (three processes) only for modules that have some.
qlab_load_modules() {
	only=$(cmdline_or qlab.modules "")
	with_params=" $(tr ' ' '\n' </proc/cmdline | tr -d '"' | awk -F. 'NF > 1 && index($1, "=") == 0 { gsub("-", "_", $1); printf "%s ", $1 }')"
	while read -r name path; do
		[ -n "$name" ] || continue
		[ -d "/sys/module/$name" ] && continue
		case ",$only," in ,,) ;; *",$name,"*) ;; *) continue ;; esac
		params=
		eval "wanted=\${QLAB_MODPARAMS_$name-}"
		case "$with_params" in *" $name "*) wanted=yes ;; esac
		[ -n "$wanted" ] && params=$(qlab_module_params "$name")
		# shellcheck disable=SC2086
		insmod "$QLAB_MODDIR/$path" $params ||
			echo "qlab-init: insmod $name failed" >&2
	done </lib/qlab/modules.load
}

# Sets the console log level once /init is done (qlab.loglevel=, default 2): kernel messages
# printed on the console in the middle of a command's output could split the marker lines
# that automation waits for, so only EMERG and ALERT (panics, BUG/oops headers) still go to
# the console; the rest is in dmesg. Boot messages before /init follow quiet/loglevel=.
qlab_console_loglevel() {
	level=$(cmdline_or qlab.loglevel 2)
	case $level in [0-8]) echo "$level" >/proc/sys/kernel/printk ;; esac
}

# Writes /etc/inittab for busybox init: one respawning console shell on the console device
# (qlab.console=, default ttyS0), started through LAUNCHER.
qlab_write_inittab() {
	tty=$(cmdline_or qlab.console ttyS0)
	cat >/etc/inittab <<EOF
$tty::respawn:$1
::ctrlaltdel:/bin/reboot -f
::shutdown:/bin/sync
EOF
}

# Prepares the console for automation before the shell starts: with echo off the tty stays
# in canonical mode and busybox sh reads plain lines (no line editing, no cursor queries, no
# redraws of long lines). qlab.echo=1 keeps the echo (and with it busybox's line editor).
# The shell reads $ENV (/lib/qlab/shrc, copied to SHRC), which prints the ready text READY
# after busybox's banner and sets the prompt "# ".
qlab_console_setup() {
	if [ "$(cmdline_or qlab.echo 0)" != 1 ]; then stty -echo 2>/dev/null || true; fi
	export TERM=dumb HOME=/root QLAB_READY="$1" ENV="${2:-/lib/qlab/shrc}"
}
