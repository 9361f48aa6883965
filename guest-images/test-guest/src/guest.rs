//! The bare-metal half: entry point, hypercalls, console, the tests.

use crate::checks::{self, Mode};
use core::fmt::{self, Write};
use nexus_abi::cpuid::{self, Transport};
use nexus_abi::ring::{PartitionInfo, Payload};
use nexus_abi::{guest, Hypercall, HypercallArgs, Reply, Status};

/// The hypervisor enters here in 64-bit mode with a valid stack.
#[no_mangle]
pub extern "C" fn _start() -> ! {
    let code = run();
    exit(code)
}

static mut TRANSPORT: Transport = Transport::Vmmcall;

/// The hypercall instruction NexusOS announced (VMCALL on VMX, VMMCALL on SVM).
fn transport() -> Transport {
    // SAFETY: TRANSPORT is written once in `run` before any call, on the
    // guest's only CPU.
    unsafe { TRANSPORT }
}

fn call(number: u64, args: [u64; 6]) -> Reply {
    let transport = transport();
    // SAFETY: discovery found NexusOS with this transport; buffers passed
    // by the callers live in this partition's identity-mapped memory.
    unsafe { guest::call(transport, &HypercallArgs { number, args }) }
}

fn exit(code: u32) -> ! {
    call(
        Hypercall::PartitionExit.number(),
        [code as u64, 0, 0, 0, 0, 0],
    );
    // partition_exit does not return when accepted; if it did, stop here.
    loop {
        // SAFETY: halting is always allowed in ring 0; the hypervisor stops us.
        unsafe { core::arch::asm!("hlt") };
    }
}

/// Line-buffered console over `console_write`.
struct Console {
    buf: [u8; 200],
    len: usize,
}

impl Console {
    const fn new() -> Self {
        Console {
            buf: [0; 200],
            len: 0,
        }
    }

    fn flush(&mut self) {
        if self.len > 0 {
            let gpa = self.buf.as_ptr() as u64; // identity-mapped: virtual = physical
            call(
                Hypercall::ConsoleWrite.number(),
                [gpa, self.len as u64, 0, 0, 0, 0],
            );
            self.len = 0;
        }
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
            if b == b'\n' {
                self.flush();
            }
        }
        Ok(())
    }
}

macro_rules! say {
    ($($arg:tt)*) => {{
        let mut c = Console::new();
        let _ = writeln!(c, $($arg)*);
        c.flush();
    }};
}

mod ap_start;
mod hostile;
mod manage;

/// Without NexusOS there is no console call: write to COM1 directly.
fn com1(s: &str) {
    for b in s.bytes() {
        // SAFETY: port output in ring 0; COM1 is emulated or denied by the hypervisor.
        unsafe { core::arch::asm!("out dx, al", in("dx") 0x3f8u16, in("al") b) };
    }
}

#[repr(C, align(8))]
struct InfoBuf([u8; 1024]);

fn run() -> u32 {
    let found = match cpuid::discover(guest::cpuid) {
        Ok(d) => d,
        Err(_) => {
            com1("test-guest: NexusOS not found through CPUID\n");
            return 10;
        }
    };
    // SAFETY: single CPU, before any call.
    unsafe { TRANSPORT = found.info.transport };
    say!(
        "NexusOS ABI {} found at CPUID {:#x} (transport {:?}, groups {:?})",
        found.info.version,
        found.base,
        found.info.transport,
        found.info.groups
    );
    let mut buf = InfoBuf([0; 1024]);
    let r = call(
        Hypercall::PartitionInfo.number(),
        [buf.0.as_mut_ptr() as u64, buf.0.len() as u64, 0, 0, 0, 0],
    );
    let len = match r.result() {
        Ok(n) => n as usize,
        Err(s) => {
            say!("partition_info failed: {s}");
            return 11;
        }
    };
    let info = match PartitionInfo::decode(&buf.0[..len.min(buf.0.len())]) {
        Ok(i) => i,
        Err(s) => {
            say!("partition_info answer does not decode: {s}");
            return 12;
        }
    };
    say!(
        "partition {} (id {}), memory {:#x}+{:#x}, cmdline \"{}\"",
        info.name,
        info.id,
        info.memory_base,
        info.memory_size,
        info.cmdline
    );
    if info.groups != found.info.groups {
        say!("FAIL: partition_info groups differ from CPUID groups");
        return 13;
    }
    match checks::parse_cmdline(info.cmdline, info.memory_base) {
        Mode::Hypercalls => hypercalls(&info, &buf),
        Mode::Isolation { addr, write } => isolation(&info, addr, write),
        Mode::Fail => {
            say!("failing on purpose (cmdline \"fail\")");
            1
        }
        Mode::TripleFault => {
            say!("executing ud2 with no IDT: a triple fault the hypervisor must contain");
            // SAFETY: deliberately faulting; the hypervisor stops this partition.
            unsafe { core::arch::asm!("ud2") };
            say!("NOT STOPPED after ud2");
            6
        }
        Mode::Port => {
            say!("reading port 0x60, which this partition does not own");
            let v: u8;
            // SAFETY: deliberately touching a port; the hypervisor intercepts it.
            unsafe { core::arch::asm!("in al, dx", in("dx") 0x60u16, out("al") v) };
            say!("NOT STOPPED: port 0x60 read {v:#x}");
            7
        }
        Mode::Msr => {
            say!("reading MSR 0x1b (APIC base), which this partition may not read");
            let (lo, hi): (u32, u32);
            // SAFETY: deliberately reading a refused MSR; the hypervisor injects #GP.
            unsafe { core::arch::asm!("rdmsr", in("ecx") 0x1bu32, out("eax") lo, out("edx") hi) };
            say!(
                "NOT STOPPED: MSR 0x1b = {:#x}",
                (hi as u64) << 32 | lo as u64
            );
            8
        }
        Mode::Hlt => {
            say!("halting without partition_exit");
            // SAFETY: HLT in ring 0; the hypervisor intercepts it.
            unsafe { core::arch::asm!("hlt") };
            say!("NOT STOPPED after hlt");
            9
        }
        Mode::ApStart { apic, vector } => ap_start::run(apic, vector),
        Mode::Hostile(attack) => hostile::run(attack, &info),
        Mode::Spin { yields } => spin(yields),
        Mode::Manage { id } => manage::run(id, &info),
        Mode::Unknown => {
            say!("unknown cmdline \"{}\"", info.cmdline);
            2
        }
    }
}

fn hypercalls(info: &PartitionInfo<'_>, buf: &InfoBuf) -> u32 {
    let inside = buf.0.as_ptr() as u64;
    let (cases, n) = checks::cases(info.groups, inside, 0x1000);
    let mut failed = 0;
    for case in cases[..n].iter().flatten() {
        let got = call(case.number, case.args).status;
        if got == case.expect {
            say!("ok   {} -> {}", case.what, got);
        } else {
            say!("FAIL {} -> {} (expected {})", case.what, got, case.expect);
            failed += 1;
        }
    }
    say!("hypercall checks: {} passed, {} failed", n - failed, failed);
    let xsetbv_ok = match crate::xsetbv::probe() {
        Some(p) => {
            say!("{p}");
            p.passed()
        }
        None => {
            say!("{}", checks::XSETBV_SKIPPED);
            true
        }
    };
    if failed == 0 && xsetbv_ok {
        0
    } else {
        3
    }
}

/// `yields` yield calls, with a line at the start and the end; exit 0 when every call
/// succeeded.
fn spin(yields: u64) -> u32 {
    say!("spinning: {yields} yield calls");
    let mut failed = 0u64;
    for _ in 0..yields {
        if call(Hypercall::Yield.number(), [0; 6]).status != Status::Success {
            failed += 1;
        }
    }
    say!("spun: {yields} yield calls, {failed} failed");
    if failed == 0 {
        0
    } else {
        14
    }
}

fn isolation(info: &PartitionInfo<'_>, addr: u64, write: bool) -> u32 {
    // The policy may grant only the management group: an AI call is refused.
    let s = call(Hypercall::AiModelLoad.number(), [0; 6]).status;
    let expect = if info.groups.permits(Hypercall::AiModelLoad) {
        Status::ServiceUnavailable
    } else {
        Status::PermissionDenied
    };
    if s != expect {
        say!("FAIL ai_model_load -> {s} (expected {expect})");
        return 4;
    }
    say!("ok   ai_model_load -> {s}");
    let p = addr as *mut u64;
    if write {
        say!("writing {addr:#x}, outside this partition: the hypervisor must stop me");
        // SAFETY: deliberately touching memory this partition does not own;
        // the hypervisor's nested page table stops the access.
        unsafe { core::ptr::write_volatile(p, 0x4e45_5855_5321) };
        say!("NOT CONTAINED: wrote {addr:#x}");
    } else {
        say!("reading {addr:#x}, outside this partition: the hypervisor must stop me");
        // SAFETY: as above.
        let v = unsafe { core::ptr::read_volatile(p) };
        say!("NOT CONTAINED: read {v:#x} from {addr:#x}");
    }
    5
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    say!("panic: {info}");
    exit(20)
}
