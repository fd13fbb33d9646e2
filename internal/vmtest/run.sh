#!/usr/bin/env bash
# make test-kernel: boot Debian's backports kernel (Linux 6.12, which offers
# BPF arenas) in qemu with an initramfs holding kflex's kernel tests, run them
# there, print their output here, and exit non-zero when a test fails, when
# the kernel in the VM refuses BPF programs or arenas, or when a test skipped
# them there. See README.md ("Tests on a BPF arena, in a VM") and RATIONALE.md.
#
# Environment (all optional):
#   KFLEX_VM_PKGS     packages to test (default: those whose tests need the kernel);
#                     PKG:PATTERN runs only PKG's tests matching PATTERN;
#                     PKG@TAGS builds PKG's tests with those build tags
#   KFLEX_VM_RUN      a -test.run pattern for every package (default: all tests)
#   KFLEX_VM_KERNEL   the kernel package (default linux-image-6.12.57+deb12-cloud-amd64,
#                     Debian's kernel for virtual machines: 34 MB, not 106)
#   KFLEX_VM_ACCEL    kvm or tcg (default: kvm where /dev/kvm opens, else tcg)
#   KFLEX_VM_MEM, KFLEX_VM_CPUS   default 4G and 2
#   KFLEX_VM_TIMEOUT  seconds before the VM is stopped (default 3600)
#   KFLEX_VM_TEST_TIMEOUT  go test's -test.timeout per package (default 20m)
#   KFLEX_VM_ENV      NAME=VALUE words for the tests' environment in the VM
#                     (KFLEX_VM_ENV=KFLEX_STRESS_KILLS=2000, say)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
GO=${GO:-go}
CACHE=$ROOT/bin/vm
PKGS=${KFLEX_VM_PKGS:-./kernel@kflexfault ./serve ./cmd/kflex ./internal/sys/arena ./stress:TestKillsKernel}
KERNEL_PKG=${KFLEX_VM_KERNEL:-linux-image-6.12.57+deb12-cloud-amd64}
MEM=${KFLEX_VM_MEM:-4G}
CPUS=${KFLEX_VM_CPUS:-2}
TIMEOUT=${KFLEX_VM_TIMEOUT:-3600}
TEST_TIMEOUT=${KFLEX_VM_TEST_TIMEOUT:-20m}

say() { echo "test-kernel: $*"; }
t0=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

# --- tools --------------------------------------------------------------------
apt_updated=
apt_install() {
	[ -n "$apt_updated" ] || { apt-get update -q >/dev/null; apt_updated=1; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
command -v gzip >/dev/null || need+=(gzip)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		say "FAIL: ${need[*]} missing, and only root installs them here (apt-get install ${need[*]}; or KFLEX_VM=0 make test to leave the arena tests out)"
		exit 1
	fi
	say "installing ${need[*]}"
	apt_install "${need[@]}"
fi

# --- the kernel: a Debian package, cached in bin/vm ---------------------------
# apt-get download with apt state of its own (bin/vm/apt) listing the backports
# suites: the host's sources and priorities stay as they are, and any of their
# kernels can be named (KFLEX_VM_KERNEL=linux-image-6.18.15+deb13-amd64 from
# trixie-backports, say).
mkdir -p "$CACHE"
VMLINUZ=$CACHE/$KERNEL_PKG.vmlinuz
if [ ! -s "$VMLINUZ" ]; then
	apt=$CACHE/apt
	mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
	keys=/usr/share/keyrings/debian-archive-keyring.gpg
	[ -s "$keys" ] || apt_install debian-archive-keyring
	cat >"$apt/sources.list" <<-EOF
		deb [signed-by=$keys] http://deb.debian.org/debian bookworm-backports main
		deb [signed-by=$keys] http://deb.debian.org/debian trixie-backports main
	EOF
	aptopts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Dir::State::Status=/dev/null)
	apt-get "${aptopts[@]}" update -q >/dev/null
	# Backports keep a few versions of a kernel: when the default one is gone,
	# the newest 6.12 (set KFLEX_VM_KERNEL to insist on one).
	if [ -z "${KFLEX_VM_KERNEL:-}" ] && ! apt-cache "${aptopts[@]}" show "$KERNEL_PKG" >/dev/null 2>&1; then
		newest=$(apt-cache "${aptopts[@]}" pkgnames linux-image-6.12. | grep -E '^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$' | sort -V | tail -1)
		[ -n "$newest" ] || { say "no linux-image-6.12.*+deb12-cloud-amd64 in bookworm-backports"; exit 1; }
		say "$KERNEL_PKG is no longer in bookworm-backports: $newest instead"
		KERNEL_PKG=$newest
		VMLINUZ=$CACHE/$KERNEL_PKG.vmlinuz
	fi
	say "downloading $KERNEL_PKG (bookworm-backports, trixie-backports)"
	dl=$(mktemp -d)
	chown _apt "$dl" 2>/dev/null || true # apt's sandbox user downloads there
	(cd "$dl" && apt-get "${aptopts[@]}" download -q "$KERNEL_PKG")
	for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$dl/x"; done
	if ! ls "$dl"/x/boot/vmlinuz-* >/dev/null 2>&1; then
		# Since Linux 7, Debian's linux-image-V is a metapackage: the image
		# is in linux-binary-V, the config in linux-base-V.
		parts=$(apt-cache "${aptopts[@]}" show "$KERNEL_PKG" | sed -n 's/^Depends: //p' | head -1 |
			grep -o 'linux-\(binary\|base\)-[^ ,]*' || true)
		[ -n "$parts" ] || { say "$KERNEL_PKG has no kernel image"; exit 1; }
		say "downloading $parts"
		rm -f "$dl"/*.deb
		(cd "$dl" && apt-get "${aptopts[@]}" download -q $parts)
		for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$dl/x"; done
	fi
	# /boot/vmlinuz-V and /boot/config-V; since 7, /usr/lib/modules/V/vmlinuz and config.
	vmlinuz=$(find "$dl/x/boot" "$dl/x/usr/lib/modules" -maxdepth 2 -name 'vmlinuz*' -type f 2>/dev/null | head -1 || true)
	config=$(find "$dl/x/boot" "$dl/x/usr/lib/modules" -maxdepth 2 -name 'config*' -type f 2>/dev/null | head -1 || true)
	[ -n "$vmlinuz" ] && [ -n "$config" ] || { say "no vmlinuz or config in $KERNEL_PKG"; exit 1; }
	cp "$config" "$CACHE/$KERNEL_PKG.config"
	cp "$vmlinuz" "$VMLINUZ.tmp" && mv "$VMLINUZ.tmp" "$VMLINUZ"
	rm -rf "$dl"
fi
# Everything the tests need is built into Debian's kernel: no modules in the
# initramfs. Check, so that a different kernel package fails here, plainly.
for opt in CONFIG_BPF_SYSCALL=y CONFIG_BPF_JIT=y CONFIG_DEVTMPFS=y CONFIG_TMPFS=y \
	CONFIG_BLK_DEV_INITRD=y CONFIG_RD_GZIP=y CONFIG_SERIAL_8250_CONSOLE=y CONFIG_UNIX=y CONFIG_FUTEX=y; do
	grep -qx "$opt" "$CACHE/$KERNEL_PKG.config" || { say "$KERNEL_PKG lacks $opt"; exit 1; }
done

# --- the initramfs: /init, the test binaries, their testdata ------------------
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{kflex/bin,kflex/src,proc,sys,dev,tmp,bin}
build() { CGO_ENABLED=0 GOOS=linux GOARCH=amd64 "$GO" "$@"; }
say "building /init, the summary and test binaries of: $PKGS"
build build -o "$stage/init" ./internal/vmtest/init
build build -o "$stage/kflex/bin/summary" ./internal/hostprobe/summary
# The tests run in their package's directory, as under go test: the repo's
# layout is kept under /kflex/src with each package's testdata, and the
# module's top-level testdata (read as ../testdata).
cp -r testdata "$stage/kflex/src/testdata"
: >"$stage/kflex/plan"
args=(-test.v -test.count=1 "-test.timeout=$TEST_TIMEOUT")
[ -z "${KFLEX_VM_RUN:-}" ] || args+=("-test.run=$KFLEX_VM_RUN")
for spec in $PKGS; do
	pkg=${spec%%:*}
	pargs=("${args[@]}")
	[ "$pkg" = "$spec" ] || pargs+=("-test.run=${spec#*:}")
	tags=
	[ "${pkg%%@*}" = "$pkg" ] || { tags=${pkg#*@}; pkg=${pkg%%@*}; }
	rel=${pkg#./}
	dir=$stage/kflex/src/$rel
	mkdir -p "$dir"
	bin="$(basename "$rel")${tags:+-${tags//[^a-z0-9]/-}}.test"
	build test -c -tags "$tags" -o "$dir/$bin" "$pkg"
	[ -f "$dir/$bin" ] || { say "$pkg has no tests"; continue; }
	[ ! -d "$rel/testdata" ] || cp -r "$rel/testdata" "$dir/testdata"
	(
		IFS=$'\t'
		echo "/kflex/src/$rel	/kflex/src/$rel/$bin	${pargs[*]}"
	) >>"$stage/kflex/plan"
done
INITRD=$CACHE/initramfs.cpio.gz
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 >"$INITRD.tmp"
mv "$INITRD.tmp" "$INITRD"
say "initramfs $(du -h "$INITRD" | cut -f1) ready after $(elapsed "$t0")"

# --- boot ----------------------------------------------------------------------
LOG=$CACHE/console.log
# qemu ACCEL INITRD SECONDS [INIT-ARGS...]: boot with the console on stdout.
qemu() {
	local accel=$1 initrd=$2 limit=$3 cpu=host opts= env=${KFLEX_VM_ENV:+ $KFLEX_VM_ENV}
	shift 3
	if [ "$accel" = tcg ]; then
		# Both vCPUs translated in threads of their own, and a translation
		# cache large enough for the test binaries: several times faster.
		cpu=max opts=,thread=multi,tb-size=512
		# The kill tests' liveness bound (2 s by default) is wall time; an
		# emulated machine on a shared host is tens of times slower. The
		# kernel hands unknown NAME=VALUE parameters to /init as environment.
		env+=" KFLEX_STRESS_MAX_WAIT=20s"
		# Under TCG the clocksource watchdog can find the TSC unstable,
		# and the kernel then patches sched_clock's static branch while
		# the other vCPU runs it: an "Oops: int3" in sched_clock_cpu
		# killed a run. The emulated TSC is the host's: trust it.
		env+=" tsc=reliable"
	fi
	# qboot, where qemu ships it, boots a -kernel faster than SeaBIOS and
	# writes nothing to the console.
	local bios=()
	[ ! -f /usr/share/qemu/qboot.rom ] || bios=(-bios /usr/share/qemu/qboot.rom)
	timeout --foreground -k 10 "$limit" qemu-system-x86_64 \
		-accel "$accel$opts" -cpu "$cpu" -m "$MEM" -smp "$CPUS" \
		"${bios[@]}" -kernel "$VMLINUZ" -initrd "$initrd" \
		-append "console=ttyS0 rdinit=/init panic=-1 loglevel=4 mitigations=off edd=off$env${*:+ -- $*}" \
		-nographic -no-reboot -nodefaults -serial stdio -monitor none \
		</dev/null 2>&1 | sed -u 's/\r$//'
}

# KVM where it can run this kernel: /dev/kvm may open and still not (a nested
# host's KVM that runs only guests built for it fails with "KVM internal
# error"). A boot of /init alone answers, once per kernel, qemu and host kernel.
accel=${KFLEX_VM_ACCEL:-}
why=
if [ -z "$accel" ]; then
	key=$CACHE/accel.$KERNEL_PKG.qemu-$(qemu-system-x86_64 --version | awk 'NR == 1 { print $4 }').host-$(uname -r)
	if [ -s "$key" ]; then
		read -r accel why <"$key"
	elif [ -c /dev/kvm ] && (: <>/dev/kvm) 2>/dev/null; then
		say "checking that KVM boots this kernel"
		mkdir -p "$stage/check"
		cp "$stage/init" "$stage/check/init"
		(cd "$stage/check" && echo init | cpio -o -H newc --quiet -R 0:0) | gzip -1 >"$stage/check.cpio.gz"
		(qemu kvm "$stage/check.cpio.gz" 30 bootcheck) >"$CACHE/kvm-check.log" 2>&1 || true
		if grep -q 'KFLEX-VM-RESULT: ok' "$CACHE/kvm-check.log"; then
			accel=kvm
		else
			accel=tcg
			why="KVM did not boot it: $(grep -a -m1 -i 'kvm internal error\|qemu-system-x86_64:' "$CACHE/kvm-check.log" || echo "no /init within 30s")"
		fi
		echo "$accel $why" >"$key"
	else
		accel=tcg why="/dev/kvm does not open"
	fi
fi
[ -z "$why" ] || say "$why (bin/vm/kvm-check.log): TCG instead, much slower"
say "booting $KERNEL_PKG under qemu with $(echo "$accel" | tr a-z A-Z) ($MEM, $CPUS CPUs); console also in $LOG"
tb=$(date +%s.%N)
# A kernel that dies before /init runs has run no kflex code: an emulator
# fault (under TCG, an "Oops: int3" where the kernel patches code that the
# other vCPU runs, even with tsc=reliable, killed a clean-clone CI run during
# early init). That boot is tried once more; anything after /init counts.
for attempt in 1 2; do
	set +e
	qemu "$accel" "$INITRD" "$TIMEOUT" | tee "$LOG"
	qemu_status=${PIPESTATUS[0]}
	set -e
	booted=$(sed -n 's/.*KFLEX-VM: kernel .* up \([0-9.]*s\)$/\1/p' "$LOG" | head -1)
	if [ -n "$booted" ] || [ "$qemu_status" = 124 ] || [ "$attempt" = 2 ]; then
		break
	fi
	cp "$LOG" "$LOG.boot$attempt"
	say "the kernel died before /init ($(grep -a -m1 'Oops\|Kernel panic' "$LOG" || echo "no oops line")); console in $LOG.boot$attempt; booting once more"
done
say "accelerator: $accel; boot to /init ${booted:-?}; VM ran $(elapsed "$tb"); whole run $(elapsed "$t0")"
if [ "$qemu_status" = 124 ]; then
	say "FAIL: the VM did not finish within ${TIMEOUT}s"
	exit 1
fi
result=$(sed -n 's/.*KFLEX-VM-RESULT: //p' "$LOG" | tail -1)
case "$result" in
ok)
	say "ok: every test binary passed in the VM, on a kernel that offers BPF programs and arenas"
	;;
fail)
	say "FAIL: see the KFLEX-VM lines above (a test failed; BPF programs or arenas were refused or skipped; or no test ran on an arena)"
	exit 1
	;;
*)
	say "FAIL: the VM ended without a result (qemu exit $qemu_status): kernel panic or init crash; see $LOG"
	exit 1
	;;
esac
