#!/usr/bin/env bash
# Builds the guest images that qlab's example labs, tests and benchmarks boot, from Debian's
# packages only, into images/out/ (git-ignored). See images/README.md.
set -euo pipefail
shopt -s nullglob

usage() {
	cat <<'EOF'
usage: images/build.sh [linux|bench|target|grub|all]...   (default: all)

Builds, from Debian's packages only (apt-get download + dpkg-deb -x, nothing installed):
  linux   images/out/linux/vmlinuz, initrd.img  the test guest: Debian's kernel, a static
          busybox initramfs with sym53c8xx, am53c974, megaraid_sas, sd_mod, sg, virtio;
          serial shell that prints "qlab-guest-ready" then the prompt "# "
          images/out/linux/disk.qcow2            blank 64 MiB qcow2 disk (internal snapshots)
  bench   images/out/bench/vmlinuz, initrd.img  the nested bench host (L1, issue 6): 9p host
          root, vfio-pci (qlab.nointxmask=), SCSI drivers; shell or qlab.run= script
  target  images/out/scsi-target.qcow2           16 MiB SCSI target with a known pattern
  grub    images/out/grub/grub.lnx                the GRUB test guest: GRUB's shell on serial
          (boot it with -kernel), reading disks through the BIOS; prints "qlab-guest-ready"
          then the prompt "grub> " (needs grub-mkimage and /usr/lib/grub/i386-pc: grub-pc-bin)
  all     all of the above

Idempotent: a product is rebuilt only when this script, images/init/*, or the Debian
package versions changed (stamps in images/out/.stamps). Downloads are cached in
images/out/cache. Environment: QLAB_IMAGES_OUT (output dir), QLAB_KERNEL_PACKAGE
(default linux-image-amd64), QLAB_IMAGES_FORCE=1 (rebuild everything).
EOF
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${QLAB_IMAGES_OUT:-$HERE/out}
CACHE=$OUT/cache
STAMPS=$OUT/.stamps
KERNEL_META=${QLAB_KERNEL_PACKAGE:-linux-image-amd64}
TARGET_MIB=16
DISK_MIB=64

# Modules of each initramfs; their dependencies are added by resolve_modules. The crypto
# providers first: crc-t10dif and crc64-rocksoft look them up by algorithm name at load.
# pvpanic_mmio drives QEMU's ISA pvpanic device (ACPI QEMU0001), which the linux profile
# adds: a guest panic becomes QMP's GUEST_PANICKED, so a run says "guest panicked" at once.
GUEST_MODULES=(crct10dif_generic crc64_rocksoft_generic scsi_mod sd_mod sg scsi_transport_spi
	sym53c8xx esp_scsi am53c974 megaraid_sas mptsas vmw_pvscsi virtio_pci virtio_blk virtio_scsi virtio_console
	pvpanic_mmio)
# scsi_debug: a SCSI target emulated by L1's kernel (loaded with no host: the nested bench's
# host-scsi scenario adds one and gives its /dev/sgN to an L2 guest's emulated controller).
BENCH_MODULES=(crct10dif_generic crc64_rocksoft_generic virtio_pci 9pnet 9pnet_virtio netfs
	fscache 9p overlay vfio vfio_iommu_type1 vfio_pci scsi_mod sd_mod sg scsi_transport_spi
	sym53c8xx esp_scsi am53c974 virtio_blk virtio_scsi virtio_console scsi_debug)

say() { printf 'images: %s\n' "$*"; }
die() { printf 'images/build.sh: error: %s\n' "$*" >&2; exit 1; }

TMPDIRS=()
cleanup() { local d; for d in "${TMPDIRS[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM
# Sets TMP to a new temporary directory inside OUT (same file system, so finished files
# move into place atomically); removed at exit.
maketemp() { TMP=$(mktemp -d "$OUT/.tmp.XXXXXX"); TMPDIRS+=("$TMP"); }

check_tools() {
	local missing=() t pkg
	local -A asked=()
	for t in "$@"; do
		[ -n "${asked[$t]:-}" ] && continue
		asked[$t]=1
		command -v "$t" >/dev/null 2>&1 && continue
		case $t in
		apt-get | apt-cache) pkg=apt ;; dpkg-deb) pkg=dpkg ;; qemu-img) pkg=qemu-utils ;;
		sha256sum | mktemp | truncate) pkg=coreutils ;; grub-mkimage) pkg=grub-pc-bin ;; flock) pkg=util-linux ;; awk) pkg=mawk ;;
		*) pkg=$t ;;
		esac
		missing+=("$t (package $pkg)")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		printf 'images/build.sh: error: missing tools: %s\n' "${missing[*]}" >&2
		printf '  install them with: apt-get install -y %s\n' \
			"$(printf '%s\n' "${missing[@]}" | sed 's/.*(package \(.*\))/\1/' | sort -u | tr '\n' ' ')" >&2
		exit 1
	fi
}

# ---- Debian packages ---------------------------------------------------------------------

APT_UPDATED=0
apt_update_once() {
	[ "$APT_UPDATED" = 1 ] && return 0
	APT_UPDATED=1
	say "apt-get update (package lists missing or stale)"
	apt-get update -qq >/dev/null 2>&1 || say "warning: apt-get update failed; using what is cached"
}

# Prints the candidate version of PACKAGE, or nothing.
candidate_version() {
	apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2; exit }'
}

# Prints the newest cached .deb of PACKAGE (for a build without package lists), or nothing.
cached_deb() {
	local f
	for f in "$CACHE/debs/"$1_*.deb; do printf '%s\n' "$f"; done | sort -V | tail -n 1
}

# Sets DEB to the path of PACKAGE's .deb at VERSION in the cache, downloading it if needed.
# Fails (with apt-get's output on stderr) when the download fails.
fetch_deb() {
	local pkg=$1 ver=$2 file dir
	file=$CACHE/debs/${pkg}_${ver//:/%3a}_amd64.deb
	if [ ! -s "$file" ]; then
		say "downloading $pkg $ver"
		maketemp
		dir=$TMP
		if ! (cd "$dir" && apt-get download "$pkg=$ver" >"$dir/log" 2>&1); then
			cat "$dir/log" >&2
			return 1
		fi
		mkdir -p "$CACHE/debs"
		mv "$dir"/*.deb "$file"
	fi
	DEB=$file
}

# Sets KERNEL_DEB and BUSYBOX_DEB: the .deb files of Debian's current kernel image package
# (linux-image-amd64 -> linux-image-<abi>-amd64) and of busybox-static. Package lists that
# are missing, or stale (their version no longer downloadable), are updated once; without
# usable lists the newest cached .deb files are used.
resolve_packages() {
	[ -n "${KERNEL_DEB:-}" ] && return 0
	local kpkg kver bver lists memo _
	# apt-cache takes over a second; its answer only changes with the package lists.
	lists=$( { echo "$KERNEL_META"; stat -c '%n %Y %s' /var/lib/apt/lists/*Packages* 2>/dev/null; } | sha256sum | cut -c1-16)
	memo=$CACHE/resolved-$lists
	if [ -f "$memo" ]; then
		{ read -r KERNEL_DEB; read -r BUSYBOX_DEB; } <"$memo" || true
		[ -s "${KERNEL_DEB:-/nonexistent}" ] && [ -s "${BUSYBOX_DEB:-/nonexistent}" ] && return 0
	fi
	for _ in 1 2; do
		kpkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')
		kver=
		[ -n "$kpkg" ] && kver=$(candidate_version "$kpkg")
		bver=$(candidate_version busybox-static)
		if [ -n "$kver" ] && [ -n "$bver" ] &&
			fetch_deb "$kpkg" "$kver" && KERNEL_DEB=$DEB &&
			fetch_deb busybox-static "$bver" && BUSYBOX_DEB=$DEB; then
			rm -f "$CACHE"/resolved-*
			printf '%s\n' "$KERNEL_DEB" "$BUSYBOX_DEB" >"$memo"
			return 0
		fi
		[ "$APT_UPDATED" = 1 ] && break
		apt_update_once
	done
	KERNEL_DEB=$(cached_deb 'linux-image-[0-9]*-amd64')
	BUSYBOX_DEB=$(cached_deb busybox-static)
	[ -n "$KERNEL_DEB" ] && [ -n "$BUSYBOX_DEB" ] ||
		die "cannot get $KERNEL_META (its linux-image-<abi>-amd64) and busybox-static from apt; check apt-get update and the network"
	say "warning: package lists unusable, using the cached ${KERNEL_DEB##*/} and ${BUSYBOX_DEB##*/}"
}

# Extracts the .deb file DEB into the cache once and sets EXTRACTED to its directory.
# PATHS limit what is extracted.
extract_deb() {
	local deb=$1 name dir tmp
	shift
	name=${deb##*/}
	dir=$CACHE/extract/${name%.deb}
	if [ ! -e "$dir/.done" ]; then
		say "extracting ${name}"
		maketemp
		tmp=$TMP
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" "$@" ||
			die "cannot extract $deb (remove it from $CACHE/debs and run again)"
		rm -rf "$dir"
		mkdir -p "${dir%/*}"
		mv "$tmp" "$dir"
		touch "$dir/.done"
	fi
	EXTRACTED=$dir
}

# Sets KROOT (extracted kernel package), KVER, VMLINUZ, BUSYBOX.
prepare_inputs() {
	[ -n "${KROOT:-}" ] && return 0
	resolve_packages
	extract_deb "$KERNEL_DEB" ./boot ./lib/modules
	KROOT=$EXTRACTED
	local d
	for d in "$KROOT"/lib/modules/*/; do KVER=$(basename "$d"); done
	[ -n "${KVER:-}" ] || die "no lib/modules in ${KERNEL_DEB##*/}"
	VMLINUZ=$KROOT/boot/vmlinuz-$KVER
	[ -f "$VMLINUZ" ] || die "no boot/vmlinuz-$KVER in ${KERNEL_DEB##*/}"
	extract_deb "$BUSYBOX_DEB" ./bin/busybox
	BUSYBOX=$EXTRACTED/bin/busybox
	[ -x "$BUSYBOX" ] || die "no bin/busybox in ${BUSYBOX_DEB##*/}"
}

# ---- kernel modules ------------------------------------------------------------------------

declare -A MODPATH=()
index_modules() {
	[ ${#MODPATH[@]} -gt 0 ] && return 0
	local f rel name
	while IFS= read -r f; do
		rel=${f#"$KROOT/lib/modules/$KVER/"}
		name=${rel##*/}
		name=${name%%.ko*}
		MODPATH[${name//-/_}]=$rel
	done < <(find "$KROOT/lib/modules/$KVER/kernel" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')
}

# Prints the modinfo FIELD (depends, softdep, ...) of the module file PATH.
modinfo_field() {
	local f=$KROOT/lib/modules/$KVER/$1
	case $f in
	*.xz) xz -dc "$f" ;; *.zst) zstd -qdc "$f" ;; *.gz) gzip -dc "$f" ;; *) cat "$f" ;;
	esac | tr '\0' '\n' | { grep -a "^$2=" || true; } | head -n 1 | cut -d= -f2-
}

declare -A SEEN=()
RESOLVED=()
visit_module() {
	local name=${1//-/_} dep
	[ -n "${SEEN[$name]:-}" ] && return 0
	SEEN[$name]=1
	if [ -z "${MODPATH[$name]:-}" ]; then
		# Built into the kernel: nothing to load.
		grep -Eq "/${1}\.ko\$|/${name}\.ko\$|/${name//_/-}\.ko\$" "$KROOT/lib/modules/$KVER/modules.builtin" && return 0
		die "kernel module $1 is neither a module nor built into $KVER"
	fi
	local deps
	deps=$(modinfo_field "${MODPATH[$name]}" depends)
	for dep in ${deps//,/ }; do visit_module "$dep"; done
	RESOLVED+=("$name")
}

# Sets RESOLVED to the modules named in $@ plus their dependencies, dependencies first.
resolve_modules() {
	index_modules
	SEEN=()
	RESOLVED=()
	local m
	for m in "$@"; do visit_module "$m"; done
}

# ---- initramfs -----------------------------------------------------------------------------

# Builds an initramfs into the directory STAGE: busybox with all its applet links, the
# modules (decompressed, so busybox insmod loads them) with modules.dep for busybox
# modprobe, /lib/qlab/modules.load (load order) and the scripts.
stage_initramfs() {
	local stage=$1 init=$2 console=$3
	shift 3
	local m rel dst
	mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,etc,lib/qlab,proc,sys,dev,tmp,run,root,mnt}
	cp "$BUSYBOX" "$stage/bin/busybox"
	while IFS= read -r m; do
		[ "$m" = bin/busybox ] || [ "$m" = linuxrc ] && continue
		mkdir -p "$stage/$(dirname "$m")"
		ln -sf /bin/busybox "$stage/$m"
	done < <("$BUSYBOX" --list-full)

	resolve_modules "$@"
	: >"$stage/lib/qlab/modules.load"
	for m in "${RESOLVED[@]}"; do
		rel=${MODPATH[$m]}
		dst=$stage/lib/modules/$KVER/${rel%.ko*}.ko
		mkdir -p "$(dirname "$dst")"
		case $rel in
		*.xz) xz -dc "$KROOT/lib/modules/$KVER/$rel" >"$dst" ;;
		*.zst) zstd -qdc "$KROOT/lib/modules/$KVER/$rel" >"$dst" ;;
		*.gz) gzip -dc "$KROOT/lib/modules/$KVER/$rel" >"$dst" ;;
		*) cp "$KROOT/lib/modules/$KVER/$rel" "$dst" ;;
		esac
		printf '%s %s\n' "$m" "${rel%.ko*}.ko" >>"$stage/lib/qlab/modules.load"
	done
	cp "$KROOT/lib/modules/$KVER/modules.builtin" "$KROOT/lib/modules/$KVER/modules.order" "$stage/lib/modules/$KVER/"
	"$BUSYBOX" depmod -b "$stage" "$KVER" ||
		die "busybox depmod failed for the initramfs in $stage"

	install -m 0755 "$HERE/init/$init" "$stage/init"
	install -m 0644 "$HERE/init/lib.sh" "$HERE/init/shrc" "$stage/lib/qlab/"
	install -m 0755 "$HERE/init/$console" "$stage/bin/qlab-console"
	for m in qlab-scsi-scan qlab-scsi-info qlab-target-check; do
		install -m 0755 "$HERE/init/$m" "$stage/bin/$m"
	done
	printf 'root::0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
	printf 'root:x:0:\ntty:x:5:\n' >"$stage/etc/group"
	printf '%s\n' "${RESOLVED[@]}" >"$stage/lib/qlab/modules.list"
}

# Packs STAGE into the zstd-compressed newc cpio FILE.
pack_initramfs() {
	local stage=$1 file=$2
	(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
		cpio --quiet -o -H newc -R 0:0 --reproducible) | zstd -q -T0 -12 >"$file"
}

# ---- stamps --------------------------------------------------------------------------------

# Prints the input key of product NAME: this script, the init files, and EXTRA (package
# file names).
input_key() {
	local name=$1
	shift
	{
		printf '%s\n' "$name" "$@"
		cat "$HERE/build.sh" "$HERE"/init/*
	} | sha256sum | cut -d' ' -f1
}

# Succeeds when product NAME was built from KEY and all its FILES exist.
up_to_date() {
	local name=$1 key=$2 f
	shift 2
	[ "${QLAB_IMAGES_FORCE:-0}" = 1 ] && return 1
	[ "$(cat "$STAMPS/$name" 2>/dev/null)" = "$key" ] || return 1
	for f in "$@"; do [ -s "$f" ] || return 1; done
}

mark_built() { mkdir -p "$STAMPS"; printf '%s\n' "$2" >"$STAMPS/$1.tmp" && mv "$STAMPS/$1.tmp" "$STAMPS/$1"; }

# ---- products ------------------------------------------------------------------------------

# A kernel + initramfs pair into DIR (linux or bench).
build_boot_image() {
	local name=$1 init=$2 console=$3
	shift 3
	local dir=$OUT/$name key tmp
	resolve_packages
	key=$(input_key "$name" "${KERNEL_DEB##*/}" "${BUSYBOX_DEB##*/}")
	if up_to_date "$name" "$key" "$dir/vmlinuz" "$dir/initrd.img"; then
		say "$name: up to date ($dir)"
		return 0
	fi
	prepare_inputs
	say "$name: building $dir/vmlinuz + initrd.img (kernel $KVER, $(basename "$BUSYBOX_DEB" .deb))"
	maketemp
	tmp=$TMP
	stage_initramfs "$tmp/root" "$init" "$console" "$@"
	pack_initramfs "$tmp/root" "$tmp/initrd.img"
	cp "$VMLINUZ" "$tmp/vmlinuz"
	{
		printf 'kernel=%s\nkernel_package=%s\nbusybox_package=%s\n' "$KVER" "${KERNEL_DEB##*/}" "${BUSYBOX_DEB##*/}"
		printf 'modules=%s\n' "${RESOLVED[*]}"
	} >"$tmp/build-info"
	mkdir -p "$dir"
	mv "$tmp/vmlinuz" "$dir/vmlinuz"
	mv "$tmp/initrd.img" "$dir/initrd.img"
	mv "$tmp/build-info" "$dir/build-info"
	mark_built "$name" "$key"
	say "$name: built $dir/initrd.img ($(du -k "$dir/initrd.img" | cut -f1) KiB, ${#RESOLVED[@]} modules)"
}

# The blank qcow2 disk the test guest carries for internal snapshots.
build_disk() {
	local file=$OUT/linux/disk.qcow2 key tmp
	key=$(input_key disk "$DISK_MIB")
	if up_to_date disk "$key" "$file"; then say "disk: up to date ($file)"; return 0; fi
	say "disk: building $file (blank, $DISK_MIB MiB)"
	maketemp
	tmp=$TMP
	qemu-img create -q -f qcow2 "$tmp/disk.qcow2" "${DISK_MIB}M"
	mkdir -p "${file%/*}"
	mv "$tmp/disk.qcow2" "$file"
	mark_built disk "$key"
}

# The SCSI target disk with the known pattern (images/README.md): sector 0 holds the header
# lines, then NUL bytes; every other sector (LBA n) holds 32 records "LBA %08X+%02X\n".
build_target() {
	local file=$OUT/scsi-target.qcow2 key tmp sectors
	key=$(input_key target "$TARGET_MIB")
	if up_to_date target "$key" "$file"; then say "target: up to date ($file)"; return 0; fi
	say "target: building $file ($TARGET_MIB MiB, pattern QLAB-SCSI-TARGET v1)"
	maketemp
	tmp=$TMP
	sectors=$((TARGET_MIB * 2048))
	truncate -s "${TARGET_MIB}M" "$tmp/target.raw"
	LC_ALL=C awk -v n="$sectors" 'BEGIN { for (s = 1; s < n; s++) for (i = 0; i < 32; i++) printf "LBA %08X+%02X\n", s, i }' |
		dd of="$tmp/target.raw" bs=512 seek=1 conv=notrunc status=none
	printf 'QLAB-SCSI-TARGET v1\nsectors=%d sector-size=512\nrecords="LBA %%08X+%%02X\\n" x32 per sector from LBA 1\n' "$sectors" |
		dd of="$tmp/target.raw" bs=512 conv=notrunc status=none
	[ "$(stat -c %s "$tmp/target.raw")" = $((TARGET_MIB * 1048576)) ] || die "target pattern has the wrong size"
	qemu-img convert -q -f raw -O qcow2 "$tmp/target.raw" "$tmp/target.qcow2"
	mv "$tmp/target.qcow2" "$file"
	mark_built target "$key"
}

# GRUB's i386-pc modules the test guest carries: the BIOS disk driver and partition maps
# (disks through the BIOS, as DOS sees them), the commands tests use, the serial terminal,
# and `normal` for the script language (`$?`, `eval`, `if`).
GRUB_MODULES=(biosdisk part_msdos part_gpt ls hexdump lspci serial terminal terminfo echo
	normal test true eval cat sleep halt reboot configfile)
GRUB_DIR=${QLAB_GRUB_DIR:-/usr/lib/grub/i386-pc}

# The GRUB test guest: a core image with an embedded config, prefixed with lnxboot.img so
# QEMU's -kernel boots it (the Linux boot protocol), from Debian's grub-pc-bin.
build_grub() {
	local dir=$OUT/grub key tmp version
	[ -f "$GRUB_DIR/lnxboot.img" ] || die "$GRUB_DIR/lnxboot.img is missing: install grub-pc-bin (apt-get install -y grub-pc-bin)"
	version=$(grub-mkimage --version 2>/dev/null | awk '{ print $NF }')
	key=$(input_key grub "$version" "${GRUB_MODULES[*]}" "$(cat "$HERE/grub/embedded.cfg")")
	if up_to_date grub "$key" "$dir/grub.lnx"; then say "grub: up to date ($dir)"; return 0; fi
	say "grub: building $dir/grub.lnx (GRUB $version, ${#GRUB_MODULES[@]} modules)"
	maketemp
	tmp=$TMP
	grub-mkimage -O i386-pc -d "$GRUB_DIR" -o "$tmp/core.img" -c "$HERE/grub/embedded.cfg" \
		-p '(hd0)' "${GRUB_MODULES[@]}" || die "grub-mkimage failed"
	cat "$GRUB_DIR/lnxboot.img" "$tmp/core.img" >"$tmp/grub.lnx"
	printf 'grub=%s\nmodules=%s\n' "$version" "${GRUB_MODULES[*]}" >"$tmp/build-info"
	mkdir -p "$dir"
	mv "$tmp/grub.lnx" "$dir/grub.lnx"
	mv "$tmp/build-info" "$dir/build-info"
	mark_built grub "$key"
	say "grub: built $dir/grub.lnx ($(du -k "$dir/grub.lnx" | cut -f1) KiB)"
}

build_linux() {
	build_boot_image linux guest-init guest-console "${GUEST_MODULES[@]}"
	build_disk
}

build_bench() {
	build_boot_image bench bench-init bench-console "${BENCH_MODULES[@]}"
}

# ---- main ----------------------------------------------------------------------------------

products=()
for arg in "$@"; do
	case $arg in
	-h | --help) usage; exit 0 ;;
	linux | bench | target | grub) products+=("$arg") ;;
	all) products+=(linux bench target grub) ;;
	*) usage >&2; die "unknown product \"$arg\"" ;;
	esac
done
[ ${#products[@]} -gt 0 ] || products=(linux bench target grub)

tools=(sha256sum mktemp truncate flock awk)
for p in "${products[@]}"; do
	case $p in
	linux) tools+=(apt-get apt-cache dpkg-deb tar cpio zstd qemu-img) ;;
	bench) tools+=(apt-get apt-cache dpkg-deb tar cpio zstd) ;;
	target) tools+=(qemu-img dd) ;;
	grub) tools+=(grub-mkimage) ;;
	esac
done
check_tools "${tools[@]}"

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
rm -rf "$OUT"/.tmp.*

for p in "${products[@]}"; do
	case $p in
	linux) build_linux ;;
	bench) build_bench ;;
	target) build_target ;;
	grub) build_grub ;;
	esac
done
