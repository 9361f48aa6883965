//! The UEFI MP services protocol: the processors, and running code on APs (UEFI only).
//!
//! Only the BSP may call these (PI spec); they must all happen before the BSP returns to
//! the firmware. A procedure started with [`Mp::start_on`] keeps running on its AP after
//! that (non-blocking start with a completion event nobody waits for), which is how APs
//! keep running partitions while the firmware boots the primary OS.

use super::cpu_info::CoreType;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use uefi::boot::{self, EventType, ScopedProtocol, Tpl};
use uefi::proto::pi::mp::{MpServices, Procedure};

/// One logical processor as MP services reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processor {
    /// MP services processor number (what `StartupThisAP` takes).
    pub index: usize,
    pub apic_id: u32,
    pub is_bsp: bool,
    pub enabled: bool,
    pub healthy: bool,
}

/// Why an MP services request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MpError {
    /// The firmware publishes no MP services protocol.
    NoProtocol,
    /// No enabled, healthy AP has this APIC ID.
    NoSuchAp(u32),
    /// The firmware refused the request.
    Firmware(&'static str, uefi::Status),
}

impl fmt::Display for MpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MpError::NoProtocol => write!(f, "no UEFI MP services protocol"),
            MpError::NoSuchAp(a) => write!(f, "no enabled AP with APIC ID {a}"),
            MpError::Firmware(what, s) => write!(f, "MP services {what} failed: {s:?}"),
        }
    }
}

/// The opened MP services protocol and the processor list.
pub struct Mp {
    proto: ScopedProtocol<MpServices>,
    processors: Vec<Processor>,
}

impl Mp {
    /// Open the protocol and list the processors.
    pub fn open() -> Result<Self, MpError> {
        let handle =
            boot::get_handle_for_protocol::<MpServices>().map_err(|_| MpError::NoProtocol)?;
        let proto =
            boot::open_protocol_exclusive::<MpServices>(handle).map_err(|_| MpError::NoProtocol)?;
        let count = proto
            .get_number_of_processors()
            .map_err(|e| MpError::Firmware("GetNumberOfProcessors", e.status()))?;
        let mut processors = Vec::with_capacity(count.total);
        for index in 0..count.total {
            let info = proto
                .get_processor_info(index)
                .map_err(|e| MpError::Firmware("GetProcessorInfo", e.status()))?;
            processors.push(Processor {
                index,
                apic_id: info.processor_id as u32,
                is_bsp: info.is_bsp(),
                enabled: info.is_enabled(),
                healthy: info.is_healthy(),
            });
        }
        Ok(Mp { proto, processors })
    }

    /// Every processor, BSP included, by MP services index.
    pub fn processors(&self) -> &[Processor] {
        &self.processors
    }

    /// The usable AP with this APIC ID.
    pub fn ap_by_apic_id(&self, apic_id: u32) -> Option<&Processor> {
        self.processors
            .iter()
            .find(|p| p.apic_id == apic_id && !p.is_bsp && p.enabled && p.healthy)
    }

    /// Start `f(arg)` on the AP with `apic_id` and return at once; the AP keeps running `f`
    /// for as long as it likes (it may never return).
    pub fn start_on(&self, apic_id: u32, f: Procedure, arg: *mut c_void) -> Result<(), MpError> {
        let ap = self
            .ap_by_apic_id(apic_id)
            .ok_or(MpError::NoSuchAp(apic_id))?;
        // SAFETY: a plain event without notification function; it only marks completion.
        let event = unsafe { boot::create_event(EventType::empty(), Tpl::CALLBACK, None, None) }
            .map_err(|e| MpError::Firmware("CreateEvent", e.status()))?;
        self.proto
            .startup_this_ap(ap.index, f, arg, Some(event), None)
            .map_err(|e| MpError::Firmware("StartupThisAP", e.status()))
    }

    /// Run `f(arg)` on every enabled AP and wait until all returned. `Ok` with no APs.
    pub fn run_on_all_aps(&self, f: Procedure, arg: *mut c_void) -> Result<(), MpError> {
        if !self.processors.iter().any(|p| !p.is_bsp && p.enabled) {
            return Ok(());
        }
        self.proto
            .startup_all_aps(false, f, arg, None, None)
            .map_err(|e| MpError::Firmware("StartupAllAPs", e.status()))
    }

    /// CPUID leaf 0x1A core type of every CPU (BSP and APs) that reports one.
    pub fn core_types(
        &self,
        bsp: Option<(u32, CoreType)>,
    ) -> Result<Vec<(u32, CoreType)>, MpError> {
        let probe = CoreTypeProbe::new();
        self.run_on_all_aps(
            probe_core_type,
            &probe as *const CoreTypeProbe as *mut c_void,
        )?;
        let mut out: Vec<(u32, CoreType)> = bsp.into_iter().collect();
        let n = probe.count.load(Ordering::Acquire).min(PROBE_SLOTS);
        for slot in &probe.slots[..n] {
            let (apic, eax) = (
                slot[0].load(Ordering::Acquire),
                slot[1].load(Ordering::Acquire),
            );
            if let Some(t) = CoreType::from_leaf_1a_eax(eax) {
                out.push((apic, t));
            }
        }
        out.sort_unstable_by_key(|(a, _)| *a);
        Ok(out)
    }
}

const PROBE_SLOTS: usize = 512;

/// Filled by the APs: each claims a slot and writes (APIC ID, leaf 0x1A EAX).
struct CoreTypeProbe {
    count: AtomicUsize,
    slots: [[AtomicU32; 2]; PROBE_SLOTS],
}

impl CoreTypeProbe {
    fn new() -> Self {
        Self {
            count: AtomicUsize::new(0),
            slots: [const { [AtomicU32::new(0), AtomicU32::new(0)] }; PROBE_SLOTS],
        }
    }
}

extern "efiapi" fn probe_core_type(arg: *mut c_void) {
    // SAFETY: `core_types` passes a pointer to a probe that outlives the blocking
    // StartupAllAPs call; only atomics are touched.
    let probe = unsafe { &*(arg as *const CoreTypeProbe) };
    let i = probe.count.fetch_add(1, Ordering::AcqRel);
    if i >= PROBE_SLOTS {
        return;
    }
    let apic = super::cpu_info::current_apic_id();
    let max = core::arch::x86_64::__cpuid(0).eax;
    let eax = if max >= 0x1A {
        core::arch::x86_64::__cpuid_count(0x1A, 0).eax
    } else {
        0
    };
    probe.slots[i][0].store(apic, Ordering::Release);
    probe.slots[i][1].store(eax, Ordering::Release);
}
