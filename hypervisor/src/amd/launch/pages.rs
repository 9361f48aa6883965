//! The hypervisor pages of one SVM guest, test partition or primary (BSP, at
//! set-up): VMCB, run page, host save area, host VMCB, and the MSR and I/O
//! permission maps.

use super::*;

pub(super) struct ControlPages {
    pub vmcb_pa: u64,
    pub run_pa: u64,
    pub hsave_pa: u64,
    pub host_vmcb_pa: u64,
    pub msrpm_pa: u64,
    pub iopm_pa: u64,
}

impl ControlPages {
    /// Zeroed pages from the hypervisor's pool.
    pub(super) fn alloc(host: &mut impl LaunchHost) -> Result<Self, &'static str> {
        let mut alloc = |n: usize| host.alloc_pages(n).map_err(|_| "out of hypervisor pages");
        Ok(ControlPages {
            vmcb_pa: alloc(1)?,
            run_pa: alloc(1)?,
            hsave_pa: alloc(1)?,
            host_vmcb_pa: alloc(1)?,
            msrpm_pa: alloc(MSRPM_SIZE / 4096)?,
            iopm_pa: alloc(IOPM_SIZE / 4096)?,
        })
    }

    /// The VMCB's controls (ASID, NPT root, the permission maps, whether HLT
    /// exits), then `guest_state` on it; the run page links the guest and host
    /// VMCBs and starts both x87/SSE areas from reset, with the guest's RSP
    /// when `rsp` is given (the primary's registers are captured later).
    pub(super) fn init(
        &self,
        asid: u32,
        ncr3: u64,
        intercept_hlt: bool,
        rsp: Option<u64>,
        guest_state: impl FnOnce(&mut Vmcb<'_>),
    ) {
        // SAFETY: the VMCB page was allocated by `alloc` for this guest alone;
        // nothing else runs it yet.
        let mut v = Vmcb(unsafe { &mut *(self.vmcb_pa as *mut [u8; 4096]) });
        init_controls(
            &mut v,
            &Controls {
                asid,
                ncr3,
                iopm_pa: self.iopm_pa,
                msrpm_pa: self.msrpm_pa,
                intercept_hlt,
            },
        );
        guest_state(&mut v);
        // SAFETY: as above, the run page; RunPage fits in one page.
        let rp = unsafe { &mut *(self.run_pa as *mut RunPage) };
        rp.guest_fx = FxArea::initial();
        rp.host_fx = FxArea::initial();
        rp.state.guest_vmcb_pa = self.vmcb_pa;
        rp.state.host_vmcb_pa = self.host_vmcb_pa;
        rp.state.guest_fx = &mut rp.guest_fx;
        rp.state.host_fx = &mut rp.host_fx;
        if let Some(rsp) = rsp {
            rp.state.gprs.0 = [0; 16];
            rp.state.gprs.0[4] = rsp;
        }
    }

    /// The partition these pages run, not started yet.
    pub(super) fn partition(
        &self,
        config: &PartitionConfig,
        host_cpu: Option<HostCpu>,
        npt: Npt,
        features: SvmFeatures,
    ) -> SvmPartition {
        SvmPartition {
            config: config.clone(),
            host_cpu,
            npt,
            features,
            vmcb_pa: self.vmcb_pa,
            run_pa: self.run_pa,
            hsave_pa: self.hsave_pa,
            outcome: Outcome::new(),
        }
    }
}
