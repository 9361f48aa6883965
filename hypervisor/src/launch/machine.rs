//! The machine as the launch builds it, once for both backends: every partition's table and
//! permission maps, every CPU's role and pages, and the state the CPUs share while they run
//! (mailboxes, outcomes, the count of test vCPUs still running, the primary's trapped pages).
//!
//! Built on the boot CPU ([`build`]), leaked, and read by every CPU afterwards; nothing in it
//! is allocated or freed once the CPUs run (host mode has no allocator on its exit paths).

use super::backend::{Backend, MapRange, PermKind, SecondLevelEdit};
use super::guest_load::{load_guest, reserve_and_zero};
use super::mailbox::Mailbox;
use super::outcome::{self, Outcome};
use super::summary::StrBuf;
use super::tracked::Tracked;
use super::{Facts, LaunchHost, Verdict};
use crate::hv_println;
use crate::mem::second_level::Perm;
use crate::mem::{Range, LARGE_PAGE_SIZE, PAGE_SIZE};
use crate::partition::guest_setup::GuestStart;
use crate::partition::lifecycle::Lifecycle;
use crate::partition::plan::Plan;
use crate::partition::{Kind, PartitionConfig, StopReason};
use crate::platform::host_cpu::HostCpu;
use crate::platform::nmi;
use crate::platform::sync::SpinLock;
use crate::stats::Stats;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The primary partition's table covers this much guest-physical space (minus the holes):
/// 512 GiB with 1 GiB pages, else 64 GiB.
pub const PRIMARY_LIMIT_HUGE: u64 = 512 << 30;
pub const PRIMARY_LIMIT: u64 = 64 << 30;
/// Spare frames of the primary's table for sink pages added at run time.
const PRIMARY_SPARE_FRAMES: u64 = 256;
/// Spare frames of a test partition's table (none are added at run time).
const TEST_SPARE_FRAMES: u64 = 0;
/// How long a test partition may run (its deadline), and a firmware proxy.
pub const TEST_DEADLINE_S: u32 = 120;
pub const PROXY_DEADLINE_S: u32 = 10;

/// What a CPU does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuRole {
    /// One of the primary's CPUs; `boot` for the one the firmware runs on.
    Primary { part: usize, boot: bool },
    /// A test partition's CPU; `first` runs its image, the others start reset.
    Test { part: usize, first: bool },
    /// A managed partition's CPU: parked until a manager starts the partition; the first of
    /// its [`Part::cpus`] starts at the manager's start state, the others reset.
    Managed { part: usize },
    /// Owned by no partition that runs now (a deferred partition's, or no one's): parked in
    /// host mode, serving firmware proxy runs.
    Idle,
}

/// One CPU of the machine.
pub struct Cpu<B: Backend> {
    pub apic_id: u32,
    /// Its slot in `platform::nmi`.
    pub nmi_slot: usize,
    pub role: CpuRole,
    /// Host GDT/TSS/stacks (`None`: none could be made; the CPU is not used).
    pub host: Option<HostCpu>,
    pub pages: Option<&'static B::CpuPages>,
    pub mailbox: Mailbox,
    /// How its vCPU ended (test partitions) and its counters (every role).
    pub outcome: Outcome,
    /// Counters of firmware proxy runs on this CPU.
    pub proxy_stats: Stats,
    /// The xAPIC logical ID its primary vCPU programmed (LDR bits 31:24), or `u32::MAX`.
    pub logical_id: AtomicU32,
    /// Parked with virtualization on: it takes the runs of its managed partition.
    pub ready: AtomicBool,
}

/// One partition the machine runs: the primary, the test partitions, and the managed
/// partitions (run when a manager starts them).
pub struct Part<B: Backend> {
    pub config: PartitionConfig,
    pub table: &'static B::Table,
    pub perms: &'static B::Perms,
    /// Test partitions: the image's 64-bit start.
    pub start: Option<GuestStart>,
    /// Indices into [`Machine::cpus`], the partition's first CPU first.
    pub cpus: Vec<usize>,
    /// Their APIC IDs, in the same order.
    pub own_apics: Vec<u32>,
    /// Managed partitions: where they are in their life.
    pub life: Option<Lifecycle>,
}

/// The primary's trapped and sink pages.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrimaryPages {
    /// The xAPIC register page (mapped read-only: writes trap).
    pub apic: u64,
    /// The MMIO hypercall doorbell (not mapped: writes trap).
    pub doorbell: u64,
    /// One 4 KiB and one 2 MiB page of hypervisor memory that stand in for memory the
    /// primary does not own, once it touched it (reads see no foreign data, writes land
    /// there).
    pub sink_4k: u64,
    pub sink_2m: u64,
}

/// Everything the CPUs share.
pub struct Machine<B: Backend> {
    pub backend: B,
    pub parts: Vec<Part<B>>,
    pub cpus: Vec<Cpu<B>>,
    /// Every CPU's APIC ID, in [`Machine::cpus`] order (for IPI routing).
    pub apic_ids: Vec<u32>,
    /// Index of the primary in `parts`.
    pub primary: Option<usize>,
    pub primary_pages: PrimaryPages,
    /// Firmware proxies run with these maps.
    pub proxy_perms: Option<&'static B::Perms>,
    /// The primary's RAM (hypercall buffers must lie in it).
    pub ram: Vec<Range>,
    /// No OS loader: the run ends (the emulator exits) at the verdict.
    pub harness: bool,
    /// Test partitions whose set-up failed.
    pub failed: Vec<(PartitionConfig, StopReason)>,
    /// Test vCPUs still running; the CPU that finishes the last one prints the summary.
    pub remaining: AtomicUsize,
    /// The boot CPU runs the primary (its first exit came): the verdict may be printed.
    pub handed_over: AtomicBool,
    pub summary_done: AtomicBool,
    /// TSC ticks per second (measured on the boot CPU).
    pub tsc_hz: u64,
    /// Serialises edits of the primary's table (sink pages).
    pub table_edit: SpinLock<()>,
    /// Foreign accesses of the primary, and IPIs it sent that were dropped.
    pub foreign_accesses: AtomicU64,
    pub dropped_ipis: AtomicU64,
    /// The primary programmed the xAPIC cluster destination model (DFR), not flat.
    pub xapic_cluster: AtomicBool,
}

impl<B: Backend> Machine<B> {
    pub fn part_of(&self, cpu: usize) -> Option<&Part<B>> {
        match self.cpus[cpu].role {
            CpuRole::Primary { part, .. }
            | CpuRole::Test { part, .. }
            | CpuRole::Managed { part, .. } => self.parts.get(part),
            CpuRole::Idle => None,
        }
    }

    pub fn cpu_by_apic(&self, apic_id: u32) -> Option<usize> {
        self.apic_ids.iter().position(|&a| a == apic_id)
    }

    pub fn primary_part(&self) -> Option<&Part<B>> {
        self.primary.and_then(|i| self.parts.get(i))
    }

    /// Ask CPU `cpu` to look at its mailbox: an NMI, which makes a guest exit and wakes a
    /// waiting host.
    pub fn kick(&self, cpu: usize) {
        let apic = self.cpus[cpu].apic_id;
        // SAFETY: host mode with the identity map; the target runs the hypervisor or one of
        // its vCPUs (NMIs exit there), never native code.
        if !unsafe { crate::platform::apic::send(nexus_drivers::apic::Icr::nmi(apic)) } {
            hv_println!("NMI to CPU {apic}: the local APIC did not send it");
        }
    }

    /// A test vCPU finished: the CPU that finishes the last one judges the run, once the
    /// boot CPU runs the primary (so the transcript shows the hand-over before the verdict).
    pub fn vcpu_finished(&self) {
        if self.remaining.fetch_sub(1, Ordering::SeqCst) == 1
            && self.handed_over.load(Ordering::SeqCst)
        {
            self.judge();
        }
    }

    /// The boot CPU's first exit as the primary's guest: judge now when every test vCPU
    /// finished before.
    pub fn primary_running(&self) {
        self.handed_over.store(true, Ordering::SeqCst);
        if self.remaining.load(Ordering::SeqCst) == 0 {
            self.judge();
        }
    }

    /// Print the summary, the counters and the verdict (once); in the harness (no OS loader)
    /// also end the emulator run.
    pub fn judge(&self) {
        if self.summary_done.swap(true, Ordering::AcqRel) {
            return;
        }
        let any_test =
            !self.failed.is_empty() || self.parts.iter().any(|p| p.config.kind == Kind::Test);
        let verdict = if any_test {
            self.summarize()
        } else {
            hv_println!("no test partition to judge");
            Verdict {
                pass: true,
                why: crate::partition::FixedStr::EMPTY,
            }
        };
        let mut primary_stats = StrBuf::<512>::new();
        if let Some(p) = self.primary_part() {
            let sum = Stats::new();
            for &c in &p.cpus {
                sum.add(self.cpus[c].outcome.stats());
            }
            let _ = sum.write_to(&mut primary_stats);
            for l in primary_stats.as_str().lines() {
                hv_println!("stats {}: {l}", p.config.name);
            }
        }
        if self.harness {
            crate::platform::log::print_result(verdict.pass, format_args!("{}", verdict.why));
            crate::platform::exit::exit_emulator(verdict.pass);
        } else {
            hv_println!(
                "test partitions: {}{}{}",
                if verdict.pass { "PASS" } else { "FAIL" },
                if verdict.pass { "" } else { " " },
                verdict.why
            );
        }
    }

    /// The summary lines and the verdict over the test partitions.
    fn summarize(&self) -> Verdict {
        let tests = self.parts.iter().filter(|p| p.config.kind == Kind::Test);
        let verdict = outcome::summarize(
            tests
                .clone()
                .map(|p| (&p.config, &self.cpus[p.cpus[0]].outcome)),
            self.failed.iter().map(|(c, s)| (c, *s)),
        );
        // The APs of multi-CPU test partitions.
        for p in tests {
            for &c in &p.cpus[1..] {
                let cpu = &self.cpus[c];
                let mut text = StrBuf::<512>::new();
                let _ = cpu.outcome.stats().write_to(&mut text);
                for l in text.as_str().lines() {
                    hv_println!("stats {} CPU {}: {l}", p.config.name, cpu.apic_id);
                }
            }
        }
        verdict
    }
}

/// The ASID / VPID of a partition: its policy index + 1 (0 is the host's).
pub fn tag(config: &PartitionConfig) -> u16 {
    config.id as u16 + 1
}

/// Build the machine on the boot CPU: test partitions (memory reserved and zeroed, image
/// loaded, table, maps), every CPU's role and pages, then the primary (its table leaves out
/// everything allocated before, so it comes last).
pub fn build<B: Backend>(
    backend: B,
    host: &mut Tracked<'_, dyn LaunchHost + '_>,
    plan: &Plan,
    facts: &Facts,
    harness: bool,
    tsc_hz: u64,
) -> Result<&'static Machine<B>, alloc::boxed::Box<Verdict>> {
    let mut parts: Vec<Part<B>> = Vec::new();
    let mut failed = Vec::new();
    let mut index_of_config = [usize::MAX; crate::partition::MAX_PARTITIONS];
    for config in plan.iter() {
        let built = match config.kind {
            Kind::Test => build_test(&backend, host, config),
            Kind::Deferred => build_managed(&backend, host, config),
            Kind::Primary => continue,
        };
        match built {
            Ok(p) => {
                index_of_config[config.id as usize] = parts.len();
                parts.push(p);
            }
            // A test partition that could not be set up fails the run; a managed one is
            // only absent (its management calls answer NotFound).
            Err(why) if config.kind == Kind::Test => {
                hv_println!("partition {}: not started: {why}", config.name);
                failed.push((config.clone(), StopReason::SetupFailed));
            }
            Err(why) => hv_println!("partition {}: cannot be managed: {why}", config.name),
        }
    }

    // Every CPU the firmware knows, each with a role.
    let mut cpus: Vec<Cpu<B>> = Vec::new();
    for &apic_id in &facts.cpus {
        let owner = facts.owner_of(apic_id);
        let role = match owner.and_then(|i| plan.partitions[i].as_ref()) {
            Some(c) if c.kind == Kind::Primary => CpuRole::Primary {
                part: usize::MAX, // set below, once the primary exists
                boot: apic_id == facts.boot_cpu,
            },
            Some(c) if c.kind == Kind::Test && index_of_config[c.id as usize] != usize::MAX => {
                CpuRole::Test {
                    part: index_of_config[c.id as usize],
                    first: c.apic_ids().first() == Some(&apic_id),
                }
            }
            Some(c)
                if c.kind == Kind::Deferred
                    && index_of_config[c.id as usize] != usize::MAX
                    && apic_id != facts.boot_cpu =>
            {
                CpuRole::Managed {
                    part: index_of_config[c.id as usize],
                }
            }
            _ if apic_id == facts.boot_cpu => CpuRole::Primary {
                part: usize::MAX,
                boot: true,
            },
            _ => CpuRole::Idle,
        };
        let host_cpu = host.host_env(apic_id);
        let pages = match backend.cpu_pages(host) {
            Ok(p) => Some(&*Box::leak(Box::new(p))),
            Err(e) => {
                hv_println!("cpu {apic_id}: no {} pages: {e}", B::NAME);
                None
            }
        };
        let Some(nmi_slot) = nmi::register(apic_id) else {
            hv_println!("cpu {apic_id}: more CPUs than the NMI table holds; not used");
            continue;
        };
        cpus.push(Cpu {
            apic_id,
            nmi_slot,
            role,
            host: host_cpu,
            pages,
            mailbox: Mailbox::new(),
            outcome: Outcome::new(),
            proxy_stats: Stats::new(),
            logical_id: AtomicU32::new(u32::MAX),
            ready: AtomicBool::new(false),
        });
    }
    let apic_ids: Vec<u32> = cpus.iter().map(|c| c.apic_id).collect();
    for (pi, p) in parts.iter_mut().enumerate() {
        // The fit check's CPUs (classes resolved), not the policy's literal list.
        for apic in facts.cpus_of(p.config.id as usize) {
            match apic_ids.iter().position(|&a| a == apic) {
                Some(ci)
                    if matches!(cpus[ci].role,
                        CpuRole::Test { part, .. } | CpuRole::Managed { part, .. } if part == pi) =>
                {
                    p.cpus.push(ci);
                    p.own_apics.push(apic);
                }
                _ => {}
            }
        }
    }
    // Test partitions whose CPUs this machine lacks (a single-CPU Bochs run) get a stand-in
    // CPU entry on the boot CPU, which runs them one after another before the hand-over.
    if let Some(b) = cpus.iter().position(|c| c.apic_id == facts.boot_cpu) {
        for (pi, p) in parts.iter_mut().enumerate() {
            let unplaced = facts
                .unplaced
                .iter()
                .any(|&(_, i)| i == p.config.id as usize);
            if p.config.kind == Kind::Test && p.cpus.is_empty() && unplaced {
                hv_println!(
                    "partition {}: its CPU is not online; it runs on the boot CPU before the \
                     hand-over",
                    p.config.name
                );
                p.cpus.push(cpus.len());
                p.own_apics.push(facts.boot_cpu);
                let (nmi_slot, pages) = (cpus[b].nmi_slot, cpus[b].pages);
                cpus.push(Cpu {
                    apic_id: facts.boot_cpu,
                    nmi_slot,
                    role: CpuRole::Test {
                        part: pi,
                        first: true,
                    },
                    host: None,
                    pages,
                    mailbox: Mailbox::new(),
                    outcome: Outcome::new(),
                    proxy_stats: Stats::new(),
                    logical_id: AtomicU32::new(u32::MAX),
                    ready: AtomicBool::new(false),
                });
            }
        }
    }

    let proxy_perms = backend
        .build_perms(host, PermKind::Proxy)
        .ok()
        .map(|p| &*Box::leak(Box::new(p)));

    let mut primary = None;
    let mut primary_pages = PrimaryPages::default();
    if let Some(config) = plan.iter().find(|c| c.kind == Kind::Primary) {
        match build_primary(&backend, host, config, plan, facts) {
            Ok((p, pages)) => {
                let pi = parts.len();
                primary = Some(pi);
                primary_pages = pages;
                let mut list = Vec::new();
                for (ci, cpu) in cpus.iter_mut().enumerate() {
                    if let CpuRole::Primary { part, boot } = &mut cpu.role {
                        *part = pi;
                        // The boot CPU first.
                        if *boot {
                            list.insert(0, ci);
                        } else {
                            list.push(ci);
                        }
                    }
                }
                let own_apics = list.iter().map(|&c| cpus[c].apic_id).collect();
                parts.push(Part {
                    cpus: list,
                    own_apics,
                    ..p
                });
            }
            Err(why) => {
                return Err(Box::new(Verdict::fail(format_args!(
                    "partition {}: cannot be set up: {why}",
                    config.name
                ))))
            }
        }
    }
    let remaining = parts
        .iter()
        .filter(|p| p.config.kind == Kind::Test)
        .map(|p| p.cpus.len().max(1))
        .sum();
    Ok(Box::leak(Box::new(Machine {
        backend,
        parts,
        cpus,
        apic_ids,
        primary,
        primary_pages,
        proxy_perms,
        ram: facts.ram.clone(),
        harness,
        failed,
        remaining: AtomicUsize::new(remaining),
        handed_over: AtomicBool::new(false),
        summary_done: AtomicBool::new(false),
        tsc_hz,
        table_edit: SpinLock::new(()),
        foreign_accesses: AtomicU64::new(0),
        dropped_ipis: AtomicU64::new(0),
        xapic_cluster: AtomicBool::new(false),
    })))
}

/// Memory, image, table and maps of one test partition.
fn build_test<B: Backend>(
    backend: &B,
    host: &mut Tracked<'_, dyn LaunchHost + '_>,
    config: &PartitionConfig,
) -> Result<Part<B>, &'static str> {
    let (loaded, start) = load_guest(host, config)?;
    let (mut part, table) = own_part(backend, host, config)?;
    hv_println!(
        "partition {}: image {} at {:#x}..{:#x} (entry {:#x}, {} relocations), {} maps {} \
         region(s) ({}), {} {}, CPU {}",
        config.name,
        config.image,
        loaded.start,
        loaded.end,
        loaded.entry,
        loaded.relocations,
        if B::NAME == "svm" { "NPT" } else { "EPT" },
        config.region_count,
        table.as_str(),
        if B::NAME == "svm" { "ASID" } else { "VPID" },
        tag(config),
        config.apic_ids().first().copied().unwrap_or(0)
    );
    part.start = Some(start);
    Ok(part)
}

/// Memory (reserved, so the primary's OS never gets it, and zeroed), table and maps of a
/// managed partition, built now so that starting it later allocates nothing.
fn build_managed<B: Backend>(
    backend: &B,
    host: &mut Tracked<'_, dyn LaunchHost + '_>,
    config: &PartitionConfig,
) -> Result<Part<B>, &'static str> {
    reserve_and_zero(host, config)?;
    let (mut part, table) = own_part(backend, host, config)?;
    hv_println!(
        "partition {}: managed: {} maps {} region(s) ({}), {} {}; waits for a manager's \
         partition_start on CPUs {:?}",
        config.name,
        if B::NAME == "svm" { "NPT" } else { "EPT" },
        config.region_count,
        table.as_str(),
        if B::NAME == "svm" { "ASID" } else { "VPID" },
        tag(config),
        config.apic_ids()
    );
    part.life = Some(Lifecycle::new());
    Ok(part)
}

/// A test or managed partition's own table (exactly its regions) and maps (everything
/// exits), as a [`Part`] with no CPUs yet, and the table's description for the log.
fn own_part<B: Backend>(
    backend: &B,
    host: &mut Tracked<'_, dyn LaunchHost + '_>,
    config: &PartitionConfig,
) -> Result<(Part<B>, StrBuf<160>), &'static str> {
    let ranges: Vec<MapRange> = config
        .regions()
        .iter()
        .map(|&range| MapRange {
            range,
            perm: Perm::RWX,
            device: false,
        })
        .collect();
    let table = backend.build_table(host, &ranges, TEST_SPARE_FRAMES)?;
    let perms = backend.build_perms(host, PermKind::Test)?;
    let mut text = StrBuf::<160>::new();
    backend.describe_table(&table, &mut text);
    let part = Part {
        config: config.clone(),
        table: Box::leak(Box::new(table)),
        perms: Box::leak(Box::new(perms)),
        start: None,
        cpus: Vec::new(),
        own_apics: Vec::new(),
        life: None,
    };
    Ok((part, text))
}

/// The primary's table: everything below the limit except the hypervisor's memory and the
/// other partitions', with its xAPIC page read-only and the doorbell page left out.
fn build_primary<B: Backend>(
    backend: &B,
    host: &mut Tracked<'_, dyn LaunchHost + '_>,
    config: &PartitionConfig,
    plan: &Plan,
    facts: &Facts,
) -> Result<(Part<B>, PrimaryPages), &'static str> {
    let perms = backend.build_perms(host, PermKind::Primary)?;
    let sink_4k = host.alloc_pages(1).map_err(|_| "out of hypervisor pages")?;
    let sink_2m = host
        .alloc_pages_aligned((LARGE_PAGE_SIZE / PAGE_SIZE) as usize, LARGE_PAGE_SIZE)
        .map_err(|_| "out of hypervisor pages for the 2 MiB sink")?;
    let limit = if facts.gib_pages {
        PRIMARY_LIMIT_HUGE
    } else {
        PRIMARY_LIMIT
    };
    let apic = facts.apic_base;
    let doorbell = limit - PAGE_SIZE;
    // The trapped pages are holes in the identity map; the APIC page comes back read-only.
    let map = host.primary_map(
        config,
        plan,
        limit,
        &[Range::new(apic, PAGE_SIZE), Range::new(doorbell, PAGE_SIZE)],
    )?;
    let mut ranges: Vec<MapRange> = map
        .ranges
        .iter()
        .map(|&range| MapRange {
            range,
            perm: Perm::RWX,
            device: false,
        })
        .collect();
    let at = ranges
        .iter()
        .position(|r| r.range.start > apic)
        .unwrap_or(ranges.len());
    ranges.insert(
        at,
        MapRange {
            range: Range::new(apic, PAGE_SIZE),
            perm: Perm::RO,
            device: true,
        },
    );
    let table = backend.build_table(host, &ranges, PRIMARY_SPARE_FRAMES)?;
    let mut text = StrBuf::<160>::new();
    backend.describe_table(&table, &mut text);
    hv_println!(
        "partition {}: {} maps {} range(s) below {} GiB ({}), leaving out {} hypervisor and \
         partition range(s); xAPIC page {apic:#x} read-only, doorbell {doorbell:#x}; {} {}, \
         CPUs {:?}",
        config.name,
        if B::NAME == "svm" { "NPT" } else { "EPT" },
        ranges.len(),
        limit >> 30,
        text.as_str(),
        map.holes,
        if B::NAME == "svm" { "ASID" } else { "VPID" },
        tag(config),
        config.apic_ids()
    );
    // What the primary owns, range by range (checked against what its OS reports).
    for r in &ranges {
        hv_println!(
            "partition {}: maps {:#x}..{:#x}{}",
            config.name,
            r.range.start,
            r.range.end,
            if r.device { " (xAPIC, read-only)" } else { "" }
        );
    }
    Ok((
        Part {
            config: config.clone(),
            table: Box::leak(Box::new(table)),
            perms: Box::leak(Box::new(perms)),
            start: None,
            cpus: Vec::new(),
            own_apics: Vec::new(),
            life: None,
        },
        PrimaryPages {
            apic,
            doorbell,
            sink_4k,
            sink_2m,
        },
    ))
}

/// Let the primary's access to `gpa`, which it does not own, land in a sink page from now
/// on: a 2 MiB sink when the whole aligned 2 MiB around it is foreign, else a 4 KiB one.
/// `false` when the table has no frame left for it.
pub fn map_sink<B: Backend>(m: &Machine<B>, table: &B::Table, gpa: u64) -> bool {
    use crate::mem::identity::IdentityMem;
    use crate::mem::second_level::SecondLevel;
    let _edit = m.table_edit.lock();
    // SAFETY: an empty pool: only reads of the table's own frames.
    let mut mem = unsafe { IdentityMem::new(0, 0) };
    if table.translate_gpa(&mut mem, gpa).is_some() {
        return true; // another CPU mapped it meanwhile
    }
    let block = gpa & !(LARGE_PAGE_SIZE - 1);
    let whole_block_foreign = (0..LARGE_PAGE_SIZE / PAGE_SIZE).all(|i| {
        table
            .translate_gpa(&mut mem, block + i * PAGE_SIZE)
            .is_none()
    });
    let sink = &m.primary_pages;
    if whole_block_foreign && table.map_large(block, sink.sink_2m, Perm::RW).is_ok() {
        return true;
    }
    table
        .map_page(gpa & !(PAGE_SIZE - 1), sink.sink_4k, Perm::RW)
        .is_ok()
}

/// How a run's log line names a stop's CPU and partition, for messages.
pub fn describe_cpu<B: Backend>(m: &Machine<B>, cpu: usize, out: &mut dyn Write) {
    let c = &m.cpus[cpu];
    let _ = match m.part_of(cpu) {
        Some(p) => write!(out, "partition {}: CPU {}", p.config.name, c.apic_id),
        None => write!(out, "CPU {}", c.apic_id),
    };
}
