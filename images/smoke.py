#!/usr/bin/env python3
"""Smoke test of the images built by images/build.sh, with real QEMU under TCG.

  images/smoke.py linux   boots the test guest with the SCSI target behind lsi53c895a,
                          checks the pattern, hotplugs an am53c974 with a second target
                          disk over QMP, rescans, unplugs, saves an internal snapshot
  images/smoke.py linux-q35  the same on q35, the card hotplugged into a pcie-root-port
  images/smoke.py bench   boots the bench host (L1) with the issue-6 command line and runs
                          checks inside it (9p root, IRQs, IOMMU groups, qemu --version)
  images/smoke.py bench-bind  the same with qlab.root=bind (no overlay)
  images/smoke.py busy    bench: reproduces the vfio INTx EBUSY failure inside L1
                          (qlab.nointxmask=1) and the control case (nointxmask=0)
  images/smoke.py l2hotplug  bench: hotplugs the slot-2 card into a paused L2 twice
                          (unplug completed by system_reset), savevm refused with the card,
                          accepted without it

A developer's tool (not part of the test suite): prints what it does and the boot time, and
ends every QEMU it started. Exit status 0 when every check passed.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("QLAB_IMAGES_OUT", os.path.join(HERE, "out"))
QEMU = os.environ.get("QEMU", "qemu-system-x86_64")


class Guest:
    """A QEMU whose serial console is on stdin/stdout and whose QMP is on a Unix socket."""

    def __init__(self, args, log_path):
        self.tmp = tempfile.mkdtemp(prefix="qlab-smoke-")
        self.qmp_path = os.path.join(self.tmp, "qmp.sock")
        cmd = [QEMU, "-display", "none", "-no-reboot", "-serial", "stdio", "-monitor", "none",
               "-qmp", f"unix:{self.qmp_path},server=on,wait=off"] + args
        print("+", " ".join(cmd), flush=True)
        self.log = open(log_path, "wb")
        self.buf = b""
        self.cond = threading.Condition()
        self.start = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.seq = 0
        self.qmp = None

    def _read(self):
        while True:
            data = self.proc.stdout.read1(65536)
            if not data:
                break
            self.log.write(data)
            self.log.flush()
            with self.cond:
                self.buf += data
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def expect(self, pattern, timeout, since=0):
        """Waits until the regex (bytes) matches the console output after offset since."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                m = rx.search(self.buf, since)
                if m:
                    return m
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    tail = self.buf[-2000:].decode(errors="replace")
                    raise TimeoutError(f"no {pattern!r} within {timeout}s; console tail:\n{tail}")
                self.cond.wait(min(left, 0.5))

    def run(self, command, timeout=60):
        """Runs a shell command on the console; returns (status, output)."""
        self.seq += 1
        marker = f"QLAB-END-{self.seq}-{os.getpid()}"
        with self.cond:
            since = len(self.buf)
        # The marker is built by the shell so an echoing console cannot fake it.
        line = f"{command}; echo \"{marker[:5]}\"\"{marker[5:]} $?\"\n"
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()
        m = self.expect(re.escape(marker.encode()) + rb" (\d+)", timeout, since)
        out = self.buf[since:m.start()].decode(errors="replace").replace("\r", "")
        out = re.sub(r"^(# )+", "", out.lstrip("\n"))
        return int(m.group(1)), out

    def qmp_connect(self):
        s = socket.socket(socket.AF_UNIX)
        for _ in range(100):
            try:
                s.connect(self.qmp_path)
                break
            except OSError:
                time.sleep(0.05)
        self.qmp = s.makefile("rwb")
        self.qmp_events = []
        json.loads(self.qmp.readline())
        self.qmp_cmd("qmp_capabilities")

    def qmp_cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.qmp.write(json.dumps(msg).encode() + b"\n")
        self.qmp.flush()
        while True:
            reply = json.loads(self.qmp.readline())
            if "event" in reply:
                self.qmp_events.append(reply)
                continue
            return reply

    def qmp_wait_event(self, name, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for e in self.qmp_events:
                if e["event"] == name:
                    self.qmp_events.remove(e)
                    return e
            self.qmp_cmd("query-status")  # pumps events
            time.sleep(0.05)
        raise TimeoutError(f"no QMP event {name} within {timeout}s")

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


FAILURES = []


def check(what, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail and not ok else ""), flush=True)
    if not ok:
        FAILURES.append(what)


def smoke_linux(machine="pc"):
    lin = os.path.join(OUT, "linux")
    target = os.path.join(OUT, "scsi-target.qcow2")
    # On q35 the hotplugged card goes into a PCIe root port (native PCIe hotplug, pciehp);
    # on pc onto the root bus (ACPI hotplug, acpiphp).
    extra = ["-device", "pcie-root-port,id=rp1,chassis=1,slot=1"] if machine == "q35" else []
    hp_bus = {"bus": "rp1"} if machine == "q35" else {}
    g = Guest(extra + ["-accel", "tcg", "-m", "256", "-machine", machine,
               "-kernel", f"{lin}/vmlinuz", "-initrd", f"{lin}/initrd.img",
               "-append", "console=ttyS0 quiet loglevel=3 panic=-1 qlab.ready=\"smoke guest ready\"",
               "-drive", f"file={lin}/disk.qcow2,if=none,id=base,snapshot=on",
               "-device", "virtio-blk-pci,drive=base",
               "-drive", f"file={target},if=none,id=t0,snapshot=on,format=qcow2",
               "-device", "lsi53c895a,id=scsi0", "-device", "scsi-hd,drive=t0,bus=scsi0.0"],
              f"/tmp/qlab-smoke-linux-{machine}.log")
    try:
        g.expect(rb"smoke guest ready\r?\n# ", 60)
        boot = time.monotonic() - g.start
        print(f"boot to prompt: {boot:.2f} s (TCG, 256 MiB, {machine})", flush=True)
        st, out = g.run("qlab-scsi-info")
        check("lsi53c895a disk at boot", st == 0 and "driver=sym53c8xx" in out and "block=sd" in out, out)
        st, out = g.run("qlab-target-check")
        check("target pattern", st == 0 and "ok /dev/sd" in out, out)
        st, out = g.run("dd if=/dev/sda bs=512 count=1 2>/dev/null | head -c 19")
        check("sector 0 header", out.strip() == "QLAB-SCSI-TARGET v1", repr(out))
        st, out = g.run("false")
        check("exit status comes back", st == 1, str(st))
        st, out = g.run("echo " + "x" * 300 + " | wc -c")
        check("long line", out.strip() == "301", repr(out))

        g.qmp_connect()
        r = g.qmp_cmd("blockdev-add", **{"node-name": "hp0", "driver": "qcow2", "read-only": True,
                                          "file": {"driver": "file", "filename": target, "read-only": True}})
        check("blockdev-add", "return" in r, str(r))
        r = g.qmp_cmd("device_add", driver="am53c974", id="hpscsi", **hp_bus)
        check("device_add am53c974", "return" in r, str(r))
        r = g.qmp_cmd("device_add", driver="scsi-hd", id="hpdisk", drive="hp0", bus="hpscsi.0")
        check("device_add scsi-hd", "return" in r, str(r))
        t0 = time.monotonic()
        st, out = g.run("qlab-scsi-scan -w 20 -n 2", timeout=60)
        print(f"hotplug to disk listed: {time.monotonic() - t0:.2f} s", flush=True)
        check("hotplugged am53c974 disk found", st == 0 and "driver=am53c974" in out, out)
        print(out, end="")
        st, out = g.run("qlab-target-check /dev/sdb")
        check("hotplugged target pattern", st == 0, out)
        t0 = time.monotonic()
        r = g.qmp_cmd("device_del", id="hpscsi")
        ev = g.qmp_wait_event("DEVICE_DELETED", 20)
        check("unplug (DEVICE_DELETED)", "return" in r and ev is not None, str(r))
        print(f"unplug took {time.monotonic() - t0:.2f} s", flush=True)
        st, out = g.run("qlab-scsi-info | grep -c driver=am53c974")
        check("disk gone after unplug", out.strip() == "0", out)

        st, out = g.run("echo written > /tmp/mark; sync")
        r = g.qmp_cmd("human-monitor-command", **{"command-line": "savevm smoke"})
        check("savevm with disk.qcow2", "return" in r and r["return"] == "", str(r))
        r = g.qmp_cmd("human-monitor-command", **{"command-line": "info snapshots"})
        check("snapshot listed", "smoke" in r.get("return", ""), str(r))
        st, out = g.run("uname -r; cat /proc/cmdline")
        print(out, end="")
        g.proc.stdin.write(b"poweroff\n")
        g.proc.stdin.flush()
        try:
            g.proc.wait(30)
            check("poweroff ends QEMU", True)
        except subprocess.TimeoutExpired:
            check("poweroff ends QEMU", False, "still running after 30 s")
    finally:
        g.close()


BENCH_ARGS = ["-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2",
              "-machine", "q35,kernel-irqchip=split", "-device", "intel-iommu,intremap=on",
              "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
              "-device", "pcie-pci-bridge,id=pb,bus=pcie.0,addr=0x5",
              "-device", "am53c974,bus=pb,addr=0x1",
              "-device", "lsi53c895a,bus=pb,addr=0x2",
              "-device", "lsi53c895a,bus=pcie.0,addr=0x6"]


def bench_guest(extra_append, log):
    b = os.path.join(OUT, "bench")
    return Guest(BENCH_ARGS + ["-kernel", f"{b}/vmlinuz", "-initrd", f"{b}/initrd.img",
                               "-append", "console=ttyS0 intel_iommu=on iommu=pt quiet loglevel=3 panic=-1 "
                               + extra_append], log)


def smoke_bench(root="overlay"):
    g = bench_guest(f"qlab.root={root}", f"/tmp/qlab-smoke-bench-{root}.log")
    try:
        g.expect(rb"qlab-bench-ready\r?\n# ", 120)
        print(f"L1 boot to prompt: {time.monotonic() - g.start:.2f} s (TCG, 2 GiB, 2 vCPUs)", flush=True)
        st, out = g.run("cat /proc/interrupts | grep -E 'CPU|sym|esp|vfio'")
        check("/proc/interrupts", st == 0 and "sym53c8xx" in out, out)
        print(out, end="")
        st, out = g.run("for d in /sys/bus/pci/devices/*; do echo ${d##*/} irq=$(cat $d/irq) "
                        "group=$(basename $(readlink $d/iommu_group)) driver=$(basename $(readlink $d/driver) 2>/dev/null); done")
        print(out, end="")
        st, out = g.run("ls /sys/kernel/iommu_groups/*/devices")
        check("iommu groups", st == 0 and "0000:01:01.0" in out, out)
        st, out = g.run("qemu-system-x86_64 --version | head -n 1")
        check("host qemu runs in L1", st == 0 and "QEMU emulator version" in out, out)
        print(out, end="")
        st, out = g.run("ls -d /dev/vfio/vfio && cat /sys/module/vfio_pci/parameters/nointxmask")
        check("/dev/vfio/vfio, nointxmask=N", st == 0 and out.strip().endswith("N"), out)
        if root == "overlay":
            st, out = g.run("touch /usr/qlab-write-test && echo $QLAB_BENCH_ROOT && mount | grep -E ' / | /tmp '")
            check("writable root", st == 0 and "overlay" in out, out)
        else:
            st, out = g.run("touch /tmp/x /root/x && echo $QLAB_BENCH_ROOT && ! touch /usr/x 2>/dev/null")
            check("bind root: /tmp, /root writable, /usr read-only", st == 0 and "bind" in out, out)
        print(out, end="")
    finally:
        g.close()


BUSY_SCRIPT = r"""#!/bin/sh
set -x
for dev in 0000:01:01.0 0000:01:02.0; do
  echo vfio-pci > /sys/bus/pci/devices/$dev/driver_override
  [ -e /sys/bus/pci/devices/$dev/driver ] && echo $dev > /sys/bus/pci/devices/$dev/driver/unbind
  echo $dev > /sys/bus/pci/drivers_probe
done
# The bridge is in the same group; it has no driver, so the group is viable.
ls -l /sys/bus/pci/devices/0000:01:0*/driver
ls /dev/vfio
grep -E 'sym|esp|vfio' /proc/interrupts
timeout 60 qemu-system-x86_64 -accel tcg -S -nodefaults -display none -device vfio-pci,host=0000:01:01.0 -monitor stdio </dev/null 2>&1 &
sleep 12
grep -E 'sym|esp|vfio' /proc/interrupts
dmesg | grep -E 'genirq|vfio' | tail -n 5
kill %1 2>/dev/null; wait
(echo 'info pci'; sleep 8; echo quit) | timeout 60 qemu-system-x86_64 -accel tcg -S -nodefaults -display none -device vfio-pci,host=0000:01:02.0 -monitor stdio 2>&1 | grep -aE 'Bus|SCSI|vfio|Device|error' | head -n 20
echo slot2-status=$?
"""


def smoke_busy():
    import base64
    for mask in ("1", "0"):
        run64 = base64.b64encode(BUSY_SCRIPT.encode()).decode()
        g = bench_guest(f"qlab.nointxmask={mask} qlab.run64={run64}", f"/tmp/qlab-smoke-busy{mask}.log")
        try:
            m = g.expect(rb"qlab-bench-exit=(\d+)", 400)
            out = g.buf.decode(errors="replace").replace("\r", "")
            print(f"--- nointxmask={mask}: L1 run took {time.monotonic() - g.start:.1f} s, exit {m.group(1).decode()}")
            print(out[out.find("qlab-bench-run"):])
            busy = "Failed to set up TRIGGER eventfd signaling for interrupt INTX-0" in out and \
                "Device or resource busy" in out
            if mask == "1":
                check("nointxmask=1: slot 1 fails with the TRIGGER EBUSY error", busy)
                check("nointxmask=1: genirq flags mismatch logged", "genirq: Flags mismatch irq" in out)
            else:
                check("nointxmask=0: slot 1 starts (shared line)", not busy)
        finally:
            g.close()


L2_HOTPLUG = r"""
import json, os, socket, subprocess, sys, time
dev = "0000:01:02.0"
def sh(c):
    print("+", c, flush=True)
    r = subprocess.run(c, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(r.stdout, end="", flush=True)
    return r.returncode
for d in ("0000:01:01.0", dev):
    sh(f"echo vfio-pci > /sys/bus/pci/devices/{d}/driver_override; echo {d} > /sys/bus/pci/devices/{d}/driver/unbind; echo {d} > /sys/bus/pci/drivers_probe")
sh("qemu-img create -q -f qcow2 /tmp/l2.qcow2 16M")
q = subprocess.Popen(["qemu-system-x86_64", "-accel", "tcg", "-S", "-machine", "pc", "-nodefaults", "-display", "none",
    "-qmp", "unix:/tmp/l2.sock,server=on,wait=off", "-drive", "file=/tmp/l2.qcow2,if=none,id=d0",
    "-device", "virtio-blk-pci,drive=d0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
s = socket.socket(socket.AF_UNIX)
for _ in range(200):
    try:
        s.connect("/tmp/l2.sock"); break
    except OSError:
        time.sleep(0.1)
f = s.makefile("rw")
events = []
f.readline()
def cmd(name, **a):
    m = {"execute": name}
    if a: m["arguments"] = a
    f.write(json.dumps(m) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "event" in r:
            events.append(r["event"]); continue
        print(f"L2 QMP {name} {a} -> {json.dumps(r)[:300]}", flush=True)
        return r
def wait_event(name, t):
    end = time.time() + t
    while time.time() < end:
        if name in events:
            events.remove(name); return True
        cmd("query-status"); time.sleep(0.2)
    return False
cmd("qmp_capabilities")
for rnd in (1, 2):
    r = cmd("device_add", driver="vfio-pci", host=dev, id="card")
    print(f"round {rnd}: device_add ok={'return' in r}")
    pci = cmd("query-pci")
    print(f"round {rnd}: card in query-pci: {'card' in json.dumps(pci)}")
    if rnd == 1:
        r = cmd("human-monitor-command", **{"command-line": "savevm withcard"})
        print("savevm with card:", r.get("return", r))
    cmd("device_del", id="card")
    got = wait_event("DEVICE_DELETED", 3)
    print(f"round {rnd}: DEVICE_DELETED without reset within 3 s: {got}")
    if not got:
        cmd("system_reset")
        print(f"round {rnd}: DEVICE_DELETED after system_reset: {wait_event('DEVICE_DELETED', 10)}")
r = cmd("human-monitor-command", **{"command-line": "savevm nocard"})
print("savevm without card:", repr(r.get("return", r)))
r = cmd("human-monitor-command", **{"command-line": "info snapshots"})
print(r.get("return", r))
cmd("quit")
q.wait(20)
print(q.stdout.read())
"""


def smoke_l2hotplug():
    tmp = tempfile.mkdtemp(prefix="qlab-smoke-l2-")
    os.chmod(tmp, 0o755)
    script = os.path.join(tmp, "l2hotplug.py")
    with open(script, "w") as f:
        f.write(L2_HOTPLUG)
    wrapper = os.path.join(tmp, "run.sh")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nexec python3 /host{script}\n")
    os.chmod(wrapper, 0o755)
    g = bench_guest(f"qlab.nointxmask=1 qlab.run={wrapper}", "/tmp/qlab-smoke-l2hotplug.log")
    try:
        m = g.expect(rb"qlab-bench-exit=(\d+)", 400)
        out = g.buf.decode(errors="replace").replace("\r", "")
        print(f"--- L1 run took {time.monotonic() - g.start:.1f} s, exit {m.group(1).decode()}")
        print(out[out.find("qlab-bench-run"):])
        check("card hotplugged into L2 twice (id reused)", out.count("device_add ok=True") == 2)
        check("card listed by query-pci", "round 1: card in query-pci: True" in out)
        check("savevm refused with the card", "savevm with card:" in out and "migrat" in out.split("savevm with card:")[1].split("\n")[0])
        check("unplug completed (DEVICE_DELETED)", out.count("DEVICE_DELETED after system_reset: True") +
              out.count("DEVICE_DELETED without reset within 3 s: True") == 2)
        check("savevm without the card", "savevm without card: ''" in out)
    finally:
        g.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    what = sys.argv[1:] or ["linux"]
    for w in what:
        {"linux": smoke_linux, "linux-q35": lambda: smoke_linux("q35"),
         "bench": smoke_bench, "bench-bind": lambda: smoke_bench("bind"), "busy": smoke_busy,
         "l2hotplug": smoke_l2hotplug}[w]()
    print(f"{len(FAILURES)} failed" if FAILURES else "all checks passed")
    sys.exit(1 if FAILURES else 0)
