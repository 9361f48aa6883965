//! The firmware's EFI_MP_SERVICES_PROTOCOL: every CPU it counted at power-on, and running a
//! procedure on one (StartupThisAP). OVMF wakes the AP with INIT, SIPI, SIPI to its APIC ID
//! through the ICR, whether or not it still believes the AP busy (the hypervisor took every
//! AP through this protocol and never gave one back): on the primary's own APs the
//! hypervisor emulates them and the procedure runs there in guest mode; on any other CPU
//! they must reach nothing, so the procedure never runs and the call times out.

use crate::cpus::CpuSet;
use core::ffi::c_void;
use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;
use uefi::boot::{self, OpenProtocolAttributes, OpenProtocolParams, ScopedProtocol};
use uefi::proto::pi::mp::MpServices;
use uefi::Status;

/// APIC ID + 1 of the last CPU that ran [`record`] (0: none), with [`UNDER_NEXUS`].
static RAN_ON: AtomicU32 = AtomicU32::new(0);
/// Set in [`RAN_ON`] when that CPU found the NexusOS signature in CPUID (guest mode).
const UNDER_NEXUS: u32 = 1 << 31;

extern "efiapi" fn record(_arg: *mut c_void) {
    let base = nexus_abi::cpuid::BASE_LEAF;
    let nexus =
        nexus_abi::cpuid::parse_signature_leaf(base, nexus_abi::guest::cpuid(base)).is_some();
    let flag = if nexus { UNDER_NEXUS } else { 0 };
    RAN_ON.store((crate::apic::my_apic_id() + 1) | flag, Ordering::SeqCst);
}

/// Where a StartupThisAP procedure ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ran {
    pub apic: u32,
    /// As a guest of NexusOS (else natively).
    pub under_nexus: bool,
}

pub struct Mp {
    proto: ScopedProtocol<MpServices>,
    /// (MP services number, APIC ID, BSP) of every processor.
    cpus: [(usize, u32, bool); crate::cpus::MAX],
    len: usize,
}

impl Mp {
    pub fn open() -> Result<Mp, Status> {
        let handle = boot::get_handle_for_protocol::<MpServices>().map_err(|e| e.status())?;
        // SAFETY: GetProtocol leaves the protocol with its driver; it outlives the probe.
        let proto = unsafe {
            boot::open_protocol::<MpServices>(
                OpenProtocolParams {
                    handle,
                    agent: boot::image_handle(),
                    controller: None,
                },
                OpenProtocolAttributes::GetProtocol,
            )
        }
        .map_err(|e| e.status())?;
        let count = proto.get_number_of_processors().map_err(|e| e.status())?;
        let mut mp = Mp {
            proto,
            cpus: [(0, 0, false); crate::cpus::MAX],
            len: 0,
        };
        for n in 0..count.total.min(crate::cpus::MAX) {
            let info = mp.proto.get_processor_info(n).map_err(|e| e.status())?;
            mp.cpus[mp.len] = (n, info.processor_id as u32, info.is_bsp());
            mp.len += 1;
        }
        Ok(mp)
    }

    /// Every CPU the firmware knows.
    pub fn cpus(&self) -> CpuSet {
        let mut s = CpuSet::new();
        for &(_, apic, _) in &self.cpus[..self.len] {
            s.insert(apic);
        }
        s
    }

    /// StartupThisAP for the CPU with `apic` (blocking, with a timeout): the status, and
    /// where the procedure ran if it did.
    pub fn try_start(&self, apic: u32, timeout: Duration) -> (Status, Option<Ran>) {
        let Some(&(n, _, _)) = self.cpus[..self.len].iter().find(|c| c.1 == apic) else {
            return (Status::NOT_FOUND, None);
        };
        RAN_ON.store(0, Ordering::SeqCst);
        let status =
            match self
                .proto
                .startup_this_ap(n, record, core::ptr::null_mut(), None, Some(timeout))
            {
                Ok(()) => Status::SUCCESS,
                Err(e) => e.status(),
            };
        let ran = RAN_ON.load(Ordering::SeqCst);
        let ran = (ran != 0).then_some(Ran {
            apic: (ran & !UNDER_NEXUS) - 1,
            under_nexus: ran & UNDER_NEXUS != 0,
        });
        (status, ran)
    }
}
