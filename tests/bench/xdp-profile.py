#!/usr/bin/env python3
"""Where netmon's XDP program spends its time, by source function and by
JITed instruction, from `perf record -e cpu-clock` samples (a timer
interrupt lands on the instruction the CPU was executing, so this works
in a guest without a PMU). Run by xdp-profile.sh, which loads netmon and
runs its program under BPF_PROG_TEST_RUN while perf samples.

    xdp-profile.py frame OUT.bin tcp|tcp_ts
    xdp-profile.py capture PROG_ID OUTDIR
    xdp-profile.py analyze OUTDIR SAMPLES.txt

`capture` (while the program is loaded) reads its JITed image, line info
and JITed line addresses with BPF_OBJ_GET_INFO_BY_FD (bpftool's own JIT
dump needs libbfd, which Debian's bpftool lacks) and the source line of
each instruction (`bpftool prog dump xlated linum`) into OUTDIR.
`analyze` disassembles the image with objdump, maps each sample to its
instruction and, through the line info, to the source function it came
from (inlined functions count as themselves). Writes OUTDIR/functions.txt
and OUTDIR/instructions.txt.
"""
import json
import bisect
import collections
import ctypes
import os
import re
import struct
import subprocess
import sys

SYS_BPF = 321  # x86-64
BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD = 13, 15
INFO_LEN = 232  # struct bpf_prog_info up to attach_btf_id


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def frame(kind):
    """An established TCP segment (ACK, 64 bytes of data) from 192.0.2.1
    to 198.51.100.1, with the timestamp option for tcp_ts."""
    opts = b"" if kind == "tcp" else b"\x01\x01\x08\x0a" + struct.pack("!II", 123456, 654321)
    payload = b"x" * 64
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, 1000, 2000, ((20 + len(opts)) // 4) << 4, 0x10, 65535, 0, 0) + opts
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 1, 0x4000, 64, 6, 0,
                     bytes([192, 0, 2, 1]), bytes([198, 51, 100, 1]))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    eth = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
    return eth + ip + tcp + payload


libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    """The bpf(2) system call with `attr`; its return value (an fd)."""
    buf = ctypes.create_string_buffer(attr, 128)
    r = libc.syscall(SYS_BPF, cmd, buf, 128)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def prog_info(fd, fill=None):
    b = ctypes.create_string_buffer(bytes(fill) if fill else bytes(INFO_LEN), INFO_LEN)
    bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("IIQ", fd, INFO_LEN, ctypes.addressof(b)))
    return b.raw


def capture(prog_id, outdir):
    fd = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("III", prog_id, 0, 0))
    i1 = prog_info(fd)
    jlen, = struct.unpack_from("I", i1, 16)
    nks, = struct.unpack_from("I", i1, 104)
    nli, = struct.unpack_from("I", i1, 148)
    njli, lrs, jrs = struct.unpack_from("III", i1, 168)
    image = ctypes.create_string_buffer(jlen)
    ks = ctypes.create_string_buffer(8 * nks)
    li = ctypes.create_string_buffer(lrs * nli)
    jli = ctypes.create_string_buffer(jrs * njli)
    f = bytearray(INFO_LEN)
    struct.pack_into("I", f, 16, jlen)
    struct.pack_into("Q", f, 24, ctypes.addressof(image))
    struct.pack_into("I", f, 104, nks)
    struct.pack_into("Q", f, 112, ctypes.addressof(ks))
    struct.pack_into("I", f, 148, nli)
    struct.pack_into("QQ", f, 152, ctypes.addressof(li), ctypes.addressof(jli))
    struct.pack_into("IIII", f, 168, njli, lrs, jrs, 0)
    prog_info(fd, f)
    ksyms = struct.unpack(f"{nks}Q", ks.raw)
    main = ksyms[0]
    recs = [struct.unpack_from("I", li.raw, i * lrs)[0] for i in range(nli)]
    jaddr = struct.unpack(f"{njli}Q", jli.raw)
    # The main program's image only (the global functions have their own).
    with open(os.path.join(outdir, "jited.bin"), "wb") as out:
        out.write(image.raw)
    xl = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(prog_id), "linum"],
                        capture_output=True, text=True, check=True).stdout
    with open(os.path.join(outdir, "xlated.txt"), "w") as out:
        out.write(xl)
    with open(os.path.join(outdir, "lines.json"), "w") as out:
        json.dump({"main": main, "insn_off": recs, "jited_addr": list(jaddr)}, out)


def analyze(outdir, samples_path):
    with open(os.path.join(outdir, "lines.json")) as fh:
        lines = json.load(fh)
    main, recs, jaddr = lines["main"], lines["insn_off"], lines["jited_addr"]
    njli = len(jaddr)
    bin_path = os.path.join(outdir, "jited.bin")
    dis = subprocess.run(["objdump", "-D", "-b", "binary", "-mi386:x86-64", bin_path],
                         capture_output=True, text=True, check=True).stdout
    ins = []
    for line in dis.splitlines():
        m = re.match(r"\s+([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(.*)", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2).strip()))
    # Source line of each xlated instruction.
    src, cur = {}, None
    with open(os.path.join(outdir, "xlated.txt")) as fh:
        xl = fh.read()
    for line in xl.splitlines():
        m = re.search(r"\[file:(\S+) line_num:(\d+)", line)
        if line.startswith(";") and m:
            cur = (m.group(1), int(m.group(2)))
            continue
        m = re.match(r"\s*(\d+): ", line)
        if m and cur:
            src[int(m.group(1))] = cur
    fns = {}

    def function(path, ln):
        if path not in fns:
            try:
                with open(path) as fh:
                    fns[path] = [(i + 1, re.search(r"\bfn (\w+)", l).group(1))
                                 for i, l in enumerate(fh) if re.search(r"\bfn \w+", l)]
            except OSError:
                fns[path] = []
        best = "?"
        for start, name in fns[path]:
            if start <= ln:
                best = name
        where = "/".join(path.split("/")[-2:]) if best == "?" else os.path.basename(path)
        return f"{where}:{best}"

    order = sorted(range(njli), key=lambda i: jaddr[i])
    addrs = [jaddr[i] for i in order]
    by_off, other = collections.Counter(), collections.Counter()
    for line in open(samples_path):
        parts = line.split()
        if len(parts) < 2:
            continue
        m = re.match(r"bpf_prog_\w+_netmon_xdp\+0x([0-9a-f]+)", parts[1])
        if m:
            by_off[int(m.group(1), 16)] += int(parts[0])
        else:
            other[parts[1].split("+")[0]] += int(parts[0])
    in_prog = sum(by_off.values())
    busy = sum(other.values()) - other["pv_native_safe_halt"] - other["native_safe_halt"] + in_prog
    by_fn = collections.Counter()
    for off, n in by_off.items():
        k = bisect.bisect_right(addrs, main + off) - 1
        p = src.get(recs[order[k]]) if k >= 0 else None
        by_fn[function(*p) if p else "(entry)"] += n
    with open(os.path.join(outdir, "functions.txt"), "w") as out:
        out.write(f"samples in netmon_xdp: {in_prog}, {100 * in_prog / busy:.1f}% of the CPU's busy samples\n")
        out.write("other busy samples: " + ", ".join(f"{k} {v}" for k, v in other.most_common(6)
                                                    if "halt" not in k) + "\n")
        for k, v in by_fn.most_common():
            out.write(f"{100 * v / in_prog:5.1f}%  {k}\n")
    with open(os.path.join(outdir, "instructions.txt"), "w") as out:
        for off, text in ins:
            v = by_off.get(off, 0)
            share = f"{100 * v / in_prog:5.1f}%" if v else "      "
            out.write(f"{share} {off:5x}: {text}\n")
    path, guessed = sampled_path(ins, by_off)
    kinds = collections.Counter(kind(text) for _, text in path)

    def fn_at(off):
        k = bisect.bisect_right(addrs, main + off) - 1
        p = src.get(recs[order[k]]) if k >= 0 else None
        return function(*p) if p else "(entry)"

    path_fns = collections.Counter(fn_at(off) for off, _ in path)
    with open(os.path.join(outdir, "path.txt"), "w") as out:
        for off, text in path:
            out.write(f"{off:5x}: {text}\n")
    with open(os.path.join(outdir, "functions.txt"), "a") as out:
        out.write(f"instructions on the sampled path (path.txt): {len(path)}, "
                  f"{guessed} branches with samples on both sides or neither taken as not taken; "
                  + ", ".join(f"{k} {v}" for k, v in kinds.most_common()) + "\n")
        out.write("by source function: "
                  + ", ".join(f"{k} {v}" for k, v in path_fns.most_common()) + "\n")


def sampled_path(ins, by_off):
    """The instructions one run of the program executes, as far as the
    samples tell: from the entry, a conditional jump goes to the side whose
    first three instructions have samples; when both or neither have, to the
    next instruction (counted as guessed). Ends at the exit's jump to the
    return thunk (or a ret)."""
    at = {off: i for i, (off, _) in enumerate(ins)}

    def sampled(i):
        return any(by_off.get(ins[j][0], 0) for j in range(i, min(i + 3, len(ins))))

    path, guessed, i = [], 0, 0
    while i < len(ins) and len(path) < 5000:
        off, text = ins[i]
        op = text.split()
        if not op:  # the rest of a long instruction
            i += 1
            continue
        path.append((off, text))
        target = int(op[1], 16) if len(op) > 1 and re.fullmatch(r"0x[0-9a-f]+", op[1]) else None
        if op[0] == "ret" or (op[0] == "jmp" and target not in at):
            break
        if op[0] == "jmp":
            i = at[target]
        elif op[0].startswith("j") and target in at:
            taken, fall = sampled(at[target]), sampled(i + 1)
            if taken and not fall:
                i = at[target]
            else:
                guessed += taken == fall
                i += 1
        else:
            i += 1
    return path, guessed


def kind(text):
    """What an x86 instruction of the JITed program does, roughly."""
    op = text.split()
    args = op[1] if len(op) > 1 else ""
    if op[0].startswith("mov") and "(%rbp)" in args:
        return "stack store" if args.endswith("(%rbp)") else "stack load"
    if op[0].startswith("mov") and "(" in args:
        return "other load/store"
    if op[0].startswith("j"):
        return "jump"
    if op[0] in ("cmp", "test"):
        return "compare"
    if op[0].startswith("mov"):
        return "register move or constant"
    return "arithmetic"


if __name__ == "__main__":
    if sys.argv[1] == "frame":
        with open(sys.argv[2], "wb") as out:
            out.write(frame(sys.argv[3]))
    elif sys.argv[1] == "capture":
        capture(int(sys.argv[2]), sys.argv[3])
    else:
        analyze(sys.argv[2], sys.argv[3])
