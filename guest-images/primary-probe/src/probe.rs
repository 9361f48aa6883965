//! The probe's rounds in order, each ending in one `ok`, `FAIL` or `skip` line, then the
//! summary and the power-off. Round names (`mp-services`, `ap-start`, `c2 xapic`, ...)
//! are what the image tests look for.

use crate::apic;
use crate::cpus::{self, CpuSet, Targets};
use crate::mp::{Mp, Ran};
use crate::nmi;
use crate::options::{self, Options};
use crate::ports;
use crate::report::{self, NmiRound, Tally, Text};
use crate::say;
use crate::time;
use crate::trampoline::Trampoline;
use core::fmt::Write;
use core::time::Duration;
use nexus_drivers::apic::{DeliveryMode, Icr, Shorthand};
use uefi::proto::loaded_image::LoadedImage;
use uefi::runtime::ResetType;
use uefi::Status;

/// How long a started CPU gets to run the start-up code.
const START_MS: u64 = 2000;
/// How long the probe watches for code that must never run.
const QUIET_MS: u64 = 200;
/// INIT to start-up IPI, and between the two start-up IPIs (the MP specification's delays).
const INIT_DELAY_MS: u64 = 10;
const SIPI_DELAY_US: u64 = 200;

/// Which ICR the IPIs of a round go through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Xapic,
    X2apic,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Xapic => "xapic",
            Via::X2apic => "x2apic",
        }
    }

    fn send(self, icr: Icr) {
        match self {
            // SAFETY: the probe uses xAPIC rounds only while its APIC is in xAPIC mode,
            // whose page the firmware identity-maps.
            Via::Xapic => unsafe { apic::send_xapic(icr) },
            // SAFETY: x2APIC rounds run only after the switch to x2APIC mode.
            Via::X2apic => unsafe { apic::send_x2apic(icr) },
        }
    }
}

pub fn run() -> ! {
    let mut tally = Tally::default();
    let me = apic::my_apic_id();
    let cmdline = load_options();
    say!(
        "NexusOS primary probe {} on APIC {me}, cmdline \"{}\"",
        env!("CARGO_PKG_VERSION"),
        cmdline.as_str()
    );
    let opts = match options::parse(cmdline.as_str()) {
        Ok(o) => o,
        Err(e) => {
            tally_fail(&mut tally, "cmdline", format_args!("{e}"));
            finish(&tally)
        }
    };
    match nexus_abi::cpuid::discover(nexus_abi::guest::cpuid) {
        Ok(d) => say!(
            "NexusOS ABI {} found at CPUID {:#x} (transport {:?})",
            d.info.version,
            d.base,
            d.info.transport
        ),
        Err(_) => {
            tally_fail(
                &mut tally,
                "discovery",
                format_args!("no NexusOS signature in CPUID: the probe must run as the primary"),
            );
            finish(&tally)
        }
    }
    let hz = time::calibrate();
    say!("TSC {} MHz (20 ms of firmware Stall)", hz / 1_000_000);
    let Some(machine) = machine(me, &opts, &mut tally) else {
        finish(&tally)
    };
    let (Some(start), Some(foreign_page), Some(broadcast)) = (
        Trampoline::place(),
        Trampoline::place(),
        Trampoline::place(),
    ) else {
        tally_fail(
            &mut tally,
            "trampolines",
            format_args!("no pages below 1 MiB for the start-up code"),
        );
        finish(&tally)
    };
    say!(
        "start-up code: own APs at {:#x} (vector {:#04x}), foreign CPUs at {:#x} ({:#04x}), \
         broadcast at {:#x} ({:#04x})",
        start.address(),
        start.vector(),
        foreign_page.address(),
        foreign_page.vector(),
        broadcast.address(),
        broadcast.vector()
    );

    ap_start(&start, &machine.targets.own_aps, &mut tally);
    mp_services(&machine.mp, &machine.targets, &mut tally);
    if apic::in_x2apic_mode() {
        say!("skip c2 xapic / h1 xapic: the firmware runs this CPU in x2APIC mode");
        tally.skip();
    } else {
        c2(
            Via::Xapic,
            &foreign_page,
            &machine.targets.foreign,
            &mut tally,
        );
    }
    let nmi_handler = match nmi::install() {
        Ok(()) => true,
        Err(s) => {
            tally_fail(
                &mut tally,
                "h1",
                format_args!("RegisterInterruptHandler(2) refused: {s:?}"),
            );
            false
        }
    };
    if nmi_handler && !apic::in_x2apic_mode() {
        h1(Via::Xapic, me, &opts, &mut tally);
    }
    l7(&mut tally);
    let via = x2apic_rounds(me, &opts, nmi_handler, &foreign_page, &machine, &mut tally);
    broadcast_start(via, &broadcast, &machine.targets, &opts, &mut tally);
    // Directed start-up IPIs to foreign CPUs must not have run anything, not even later.
    match report::nobody_else(&foreign_page.slots(), &CpuSet::new()) {
        Ok(()) => {
            say!(
                "ok   c2 later: the start-up code sent to foreign CPUs (vector {:#04x}) never ran \
                 anywhere",
                foreign_page.vector()
            );
            tally.pass();
        }
        Err(p) => tally_fail(&mut tally, "c2 later", format_args!("{p}")),
    }
    if nmi_handler {
        let _ = nmi::uninstall();
    }
    finish(&tally)
}

struct Machine {
    mp: Mp,
    targets: Targets,
}

/// The CPUs: the firmware's (MP services) and the primary's (its MADT; the cmdline's
/// `cpus=` where the firmware has no ACPI tables, and the two must agree where both exist).
fn machine(me: u32, opts: &Options, tally: &mut Tally) -> Option<Machine> {
    let mp = match Mp::open() {
        Ok(mp) => mp,
        Err(s) => {
            tally_fail(
                tally,
                "cpus",
                format_args!("no MP services protocol: {s:?}"),
            );
            return None;
        }
    };
    let firmware = mp.cpus();
    let primary = match (crate::acpi::madt_cpus(), opts.cpus) {
        (Some(madt), Some(policy)) => {
            if madt == policy {
                say!("ok   madt: the primary's MADT lists exactly its CPUs {madt}");
                tally.pass();
            } else {
                tally_fail(
                    tally,
                    "madt",
                    format_args!(
                        "the primary's MADT lists {madt}, the policy gives it {policy}: \
                         an OS would try to start CPUs it does not own"
                    ),
                );
            }
            madt
        }
        (Some(madt), None) => madt,
        (None, Some(policy)) => {
            say!("no MADT (the firmware publishes no ACPI tables): the primary's CPUs from the cmdline");
            policy
        }
        (None, None) => {
            tally_fail(
                tally,
                "cpus",
                format_args!("no MADT in the ACPI 2.0 tables and no cpus= in the cmdline"),
            );
            return None;
        }
    };
    let targets = cpus::targets(me, &primary, &firmware);
    say!(
        "CPUs: firmware (MP services) {firmware}, the primary's {primary}: own APs {}, foreign {}",
        targets.own_aps,
        targets.foreign
    );
    if !primary.contains(me) {
        tally_fail(
            tally,
            "cpus",
            format_args!("the primary's CPUs {primary} do not include this one (APIC {me})"),
        );
        return None;
    }
    Some(Machine { mp, targets })
}

/// The firmware's StartupThisAP on each own AP: the procedure runs there, in guest mode.
/// Not tried on foreign CPUs: OVMF's WakeUpAP waits without a timeout until the AP takes
/// its start-up signal, so a call for a CPU that never starts does not return.
fn mp_services(mp: &Mp, t: &Targets, tally: &mut Tally) {
    if t.own_aps.is_empty() {
        say!("skip mp-services: the primary has no other CPU");
        tally.skip();
        return;
    }
    for &apic in t.own_aps.as_slice() {
        match mp.try_start(apic, Duration::from_secs(1)) {
            (
                Status::SUCCESS,
                Some(Ran {
                    apic: on,
                    under_nexus: true,
                }),
            ) if on == apic => {}
            (status, ran) => {
                return tally_fail(
                    tally,
                    "mp-services",
                    format_args!(
                        "StartupThisAP(APIC {apic}) -> {status:?}, procedure ran {ran:?}: \
                         expected SUCCESS on APIC {apic} in guest mode"
                    ),
                );
            }
        }
    }
    say!(
        "ok   mp-services: StartupThisAP ran the procedure on APIC {} in guest mode (the \
         firmware's INIT, SIPI, SIPI emulated)",
        t.own_aps
    );
    tally.pass();
}

/// INIT, SIPI, SIPI to each own AP through the xAPIC ICR; each must run the code once.
fn ap_start(page: &Trampoline, aps: &CpuSet, tally: &mut Tally) {
    if aps.is_empty() {
        say!("skip ap-start: the primary has no other CPU");
        tally.skip();
        return;
    }
    let via = if apic::in_x2apic_mode() {
        Via::X2apic
    } else {
        Via::Xapic
    };
    let t0 = time::now();
    for &ap in aps.as_slice() {
        init_sipi_sipi(via, Icr::init(ap), Icr::startup(ap, page.vector()));
    }
    let done = wait_ms(START_MS, || report::missing(&page.slots(), aps).is_empty());
    let ms = time::ms_between(t0, time::now());
    match report::ran_once_each(&page.slots(), aps) {
        Ok(()) => {
            say!(
                "ok   ap-start: APIC {aps} started by INIT, SIPI {v:#04x}, SIPI {v:#04x} through the \
                 {} ICR: each ran the start-up code once, in guest mode ({ms} ms)",
                via.name(),
                v = page.vector()
            );
            tally.pass();
        }
        Err(p) => tally_fail(
            tally,
            "ap-start",
            format_args!("{p}{}", if done { "" } else { " (no answer within 2 s)" }),
        ),
    }
}

/// INIT, start-up IPI (to `page`) and NMI to every foreign CPU: nothing may run.
fn c2(via: Via, page: &Trampoline, foreign: &CpuSet, tally: &mut Tally) {
    let name = match via {
        Via::Xapic => "c2 xapic",
        Via::X2apic => "c2 x2apic",
    };
    if foreign.is_empty() {
        say!("skip {name}: every CPU belongs to the primary");
        tally.skip();
        return;
    }
    for &cpu in foreign.as_slice() {
        init_sipi_sipi(via, Icr::init(cpu), Icr::startup(cpu, page.vector()));
        via.send(Icr::nmi(cpu));
    }
    wait_ms(QUIET_MS, || false);
    match report::nobody_else(&page.slots(), &CpuSet::new()) {
        Ok(()) => {
            say!(
                "ok   {name}: INIT, SIPI {v:#04x}, SIPI {v:#04x}, NMI to APIC {foreign}: nothing ran \
                 (start-up code untouched after {QUIET_MS} ms)",
                v = page.vector()
            );
            tally.pass();
        }
        Err(p) => tally_fail(tally, name, format_args!("{p}")),
    }
}

/// Self-NMIs by APIC ID, one after another; each must reach the handler exactly once.
fn h1(via: Via, me: u32, opts: &Options, tally: &mut Tally) {
    let name = match via {
        Via::Xapic => "h1 xapic",
        Via::X2apic => "h1 x2apic",
    };
    let t0 = time::now();
    let round = nmi_round(opts.nmis, || via.send(Icr::nmi(me)));
    let ms = time::ms_between(t0, time::now());
    match round.judge() {
        Ok(()) => {
            say!(
                "ok   {name}: self-NMIs through the {} ICR: {round} ({ms} ms)",
                via.name()
            );
            tally.pass();
        }
        Err(why) => tally_fail(tally, name, format_args!("{why}: {round} ({ms} ms)")),
    }
}

fn nmi_round(n: u32, send: impl Fn()) -> NmiRound {
    let mut r = NmiRound::default();
    let first = nmi::count();
    for _ in 0..n {
        let before = nmi::count();
        send();
        r.sent += 1;
        // Polling memory makes no exit: an NMI the hypervisor holds back shows up here.
        if wait_ms(50, || nmi::count() != before) {
            continue;
        }
        apic::cpuid_exit();
        if wait_ms(1000, || nmi::count() != before) {
            r.late += 1;
        } else {
            r.lost += 1;
        }
    }
    // A duplicate would arrive now.
    wait_ms(50, || false);
    apic::cpuid_exit();
    wait_ms(50, || false);
    r.counted = nmi::count() - first;
    r
}

/// The emulators' exit ports and the hypervisor's console: the run must go on.
fn l7(tally: &mut Tally) {
    let back = ports::attack();
    if back.debug_exit != 0xff || back.shutdown != 0xff {
        return tally_fail(
            tally,
            "l7",
            format_args!(
                "port 0xf4 reads {:#04x}, 0x8900 reads {:#04x}: expected 0xff (trapped, no device)",
                back.debug_exit, back.shutdown
            ),
        );
    }
    say!(
        "ok   l7: wrote 0x10 and 0x11 to 0xf4, 0x10 to 0xf4-0xf7, \"Shutdown\" to 0x8900 and a \
         forged verdict to COM2 ({:#x}): still running, 0xf4 and 0x8900 read 0xff",
        ports::COM2
    );
    tally.pass();
}

/// Where the CPU has x2APIC: switch to it, then C2 and H1 through the ICR MSR. Returns the
/// ICR the later rounds use.
fn x2apic_rounds(
    me: u32,
    opts: &Options,
    nmi_handler: bool,
    foreign_page: &Trampoline,
    machine: &Machine,
    tally: &mut Tally,
) -> Via {
    if !apic::has_x2apic() {
        say!("skip c2 x2apic / h1 x2apic: the CPU has no x2APIC (CPUID.1:ECX bit 21 clear)");
        tally.skip();
        return Via::Xapic;
    }
    if !apic::in_x2apic_mode() {
        // SAFETY: OVMF's local APIC library reads the mode on every access.
        unsafe { apic::enable_x2apic() };
        if !apic::in_x2apic_mode() {
            tally_fail(
                tally,
                "x2apic",
                format_args!("IA32_APIC_BASE still says xAPIC after the switch"),
            );
            return Via::Xapic;
        }
        say!("x2APIC mode on (IA32_APIC_BASE bit 10 set: the switch the hypervisor allows)");
    }
    c2(Via::X2apic, foreign_page, &machine.targets.foreign, tally);
    if nmi_handler {
        h1(Via::X2apic, me, opts, tally);
    }
    Via::X2apic
}

/// INIT, SIPI, SIPI to all but self: the own APs restart; every foreign CPU runs the code
/// once, as the hypervisor's firmware proxy in guest mode, once its partition ended.
fn broadcast_start(via: Via, page: &Trampoline, t: &Targets, opts: &Options, tally: &mut Tally) {
    let mut all = t.own_aps;
    t.foreign.as_slice().iter().for_each(|&a| all.insert(a));
    if all.is_empty() {
        say!("skip broadcast: no other CPU");
        tally.skip();
        return;
    }
    let to_all = |icr: Icr| Icr {
        shorthand: Shorthand::AllExcludingSelf,
        destination: 0,
        ..icr
    };
    let t0 = time::now();
    init_sipi_sipi(
        via,
        to_all(Icr::init(0)),
        to_all(Icr::to_cpu(DeliveryMode::StartUp, page.vector(), 0)),
    );
    // When each CPU answered (ms after the IPIs).
    let mut answered = [None::<u64>; 256];
    let deadline = time::deadline_ms(u64::from(opts.wait_s) * 1000);
    let mut next_note = time::deadline_ms(10_000);
    loop {
        let slots = page.slots();
        let now = time::now();
        for &a in all.as_slice() {
            if answered[a as usize].is_none() && slots.0[a as usize] != 0 {
                answered[a as usize] = Some(time::ms_between(t0, now));
            }
        }
        let missing = report::missing(&slots, &all);
        if missing.is_empty() || time::passed(deadline) {
            break;
        }
        if time::passed(next_note) {
            say!("broadcast: still waiting for APIC {missing} (a CPU of a running partition answers once it ended)");
            next_note = time::deadline_ms(10_000);
        }
        core::hint::spin_loop();
    }
    // A second run would come now (a start-up IPI must not restart a CPU that runs).
    wait_ms(QUIET_MS, || false);
    let slots = page.slots();
    let mut when = Text::<200>::new();
    for &a in all.as_slice() {
        if let Some(ms) = answered[a as usize] {
            let _ = write!(when, " {a}:{ms}");
        }
    }
    match report::ran_once_each(&slots, &all) {
        Ok(()) => {
            say!(
                "ok   broadcast: INIT, SIPI {v:#04x}, SIPI {v:#04x} to all but self through the {} \
                 ICR: own APs {} restarted, foreign {} each ran the code once in guest mode (ms \
                 after the IPIs, by APIC:{})",
                via.name(),
                t.own_aps,
                t.foreign,
                when.as_str(),
                v = page.vector()
            );
            tally.pass();
        }
        Err(p) => tally_fail(
            tally,
            "broadcast",
            format_args!("{p}; answered by APIC:{}", when.as_str()),
        ),
    }
}

fn init_sipi_sipi(via: Via, init: Icr, sipi: Icr) {
    via.send(init);
    wait_ms(INIT_DELAY_MS, || false);
    via.send(sipi);
    wait_us(SIPI_DELAY_US);
    via.send(sipi);
}

/// Poll `done` for up to `ms` milliseconds (no exits); whether it became true.
fn wait_ms(ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = time::deadline_ms(ms);
    loop {
        if done() {
            return true;
        }
        if time::passed(deadline) {
            return false;
        }
        core::hint::spin_loop();
    }
}

fn wait_us(us: u64) {
    let deadline = time::deadline_us(us);
    while !time::passed(deadline) {
        core::hint::spin_loop();
    }
}

fn tally_fail(tally: &mut Tally, check: &str, why: core::fmt::Arguments<'_>) {
    say!("FAIL {check}: {why}");
    tally.fail(check, why);
}

/// The load options (the policy's cmdline), as ASCII; empty when there are none.
fn load_options() -> Text<1100> {
    let mut t = Text::new();
    let Ok(li) = uefi::boot::open_protocol_exclusive::<LoadedImage>(uefi::boot::image_handle())
    else {
        return t;
    };
    if let Ok(s) = li.load_options_as_cstr16() {
        for c in s.iter() {
            let c = char::from(*c);
            let _ = t.write_char(if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            });
        }
    }
    t
}

/// The summary line, then the power-off.
fn finish(tally: &Tally) -> ! {
    say!("RESULT {}", tally.verdict());
    // Let the other CPUs' last log lines out before the machine goes.
    wait_ms(500, || false);
    power_off()
}

pub fn power_off() -> ! {
    say!("powering off (ResetSystem shutdown)");
    uefi::runtime::reset(ResetType::SHUTDOWN, Status::SUCCESS, None)
}
