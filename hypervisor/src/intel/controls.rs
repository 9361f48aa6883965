//! VMX control-field adjustment from the capability MSRs (SDM Vol. 3D, A.3-A.5).
//!
//! Each capability MSR holds two 32-bit masks: the low half lists the bits that
//! must be 1 ("allowed-0 settings"), the high half lists the bits that may be 1
//! ("allowed-1 settings"). When IA32_VMX_BASIC bit 55 is set, the TRUE_ MSRs
//! replace the plain ones for pin-based, primary processor-based, exit and entry
//! controls; they allow some "default1" bits to be cleared.

use core::fmt;

/// IA32_VMX_BASIC.
pub const MSR_VMX_BASIC: u32 = 0x480;
pub const MSR_VMX_PINBASED_CTLS: u32 = 0x481;
pub const MSR_VMX_PROCBASED_CTLS: u32 = 0x482;
pub const MSR_VMX_EXIT_CTLS: u32 = 0x483;
pub const MSR_VMX_ENTRY_CTLS: u32 = 0x484;
pub const MSR_VMX_MISC: u32 = 0x485;
pub const MSR_VMX_CR0_FIXED0: u32 = 0x486;
pub const MSR_VMX_CR0_FIXED1: u32 = 0x487;
pub const MSR_VMX_CR4_FIXED0: u32 = 0x488;
pub const MSR_VMX_CR4_FIXED1: u32 = 0x489;
pub const MSR_VMX_PROCBASED_CTLS2: u32 = 0x48B;
pub const MSR_VMX_EPT_VPID_CAP: u32 = 0x48C;
pub const MSR_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
pub const MSR_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
pub const MSR_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
pub const MSR_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;

/// Bit 55 of IA32_VMX_BASIC: the TRUE_ capability MSRs exist.
pub const BASIC_TRUE_CTLS: u64 = 1 << 55;

/// Pin-based VM-execution controls.
pub mod pin {
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    pub const NMI_EXITING: u32 = 1 << 3;
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
}

/// Primary processor-based VM-execution controls.
pub mod proc {
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    pub const HLT_EXITING: u32 = 1 << 7;
    pub const INVLPG_EXITING: u32 = 1 << 9;
    pub const MWAIT_EXITING: u32 = 1 << 10;
    pub const RDPMC_EXITING: u32 = 1 << 11;
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const MONITOR_EXITING: u32 = 1 << 29;
    pub const ACTIVATE_SECONDARY: u32 = 1 << 31;
    /// Exits only untrusted guests take (the primary keeps perf counters and
    /// its idle loop native): RDPMC, MWAIT, MONITOR.
    pub const UNTRUSTED_ONLY: u32 = RDPMC_EXITING | MWAIT_EXITING | MONITOR_EXITING;
}

/// Secondary processor-based VM-execution controls.
pub mod proc2 {
    pub const ENABLE_EPT: u32 = 1 << 1;
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    pub const ENABLE_VPID: u32 = 1 << 5;
    pub const WBINVD_EXITING: u32 = 1 << 6;
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    pub const ENABLE_XSAVES: u32 = 1 << 20;
}

/// VM-exit controls.
pub mod exit {
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const ACK_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    pub const SAVE_PAT: u32 = 1 << 18;
    pub const LOAD_PAT: u32 = 1 << 19;
    pub const SAVE_EFER: u32 = 1 << 20;
    pub const LOAD_EFER: u32 = 1 << 21;
}

/// VM-entry controls.
pub mod entry {
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const LOAD_PAT: u32 = 1 << 14;
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// Which control field a capability applies to (for error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlField {
    PinBased,
    ProcBased,
    ProcBased2,
    Exit,
    Entry,
}

impl ControlField {
    pub const fn name(self) -> &'static str {
        match self {
            ControlField::PinBased => "pin-based VM-execution controls",
            ControlField::ProcBased => "primary processor-based VM-execution controls",
            ControlField::ProcBased2 => "secondary processor-based VM-execution controls",
            ControlField::Exit => "VM-exit controls",
            ControlField::Entry => "VM-entry controls",
        }
    }

    /// Human name of one control bit, where we use it.
    pub fn bit_name(self, bit: u32) -> &'static str {
        let mask = 1u32 << bit;
        match self {
            ControlField::PinBased => match mask {
                pin::EXTERNAL_INTERRUPT_EXITING => "external-interrupt exiting",
                pin::NMI_EXITING => "NMI exiting",
                pin::VIRTUAL_NMIS => "virtual NMIs",
                pin::PREEMPTION_TIMER => "VMX-preemption timer",
                _ => "pin-based control",
            },
            ControlField::ProcBased => match mask {
                proc::HLT_EXITING => "HLT exiting",
                proc::USE_IO_BITMAPS => "use I/O bitmaps",
                proc::USE_MSR_BITMAPS => "use MSR bitmaps",
                proc::ACTIVATE_SECONDARY => "activate secondary controls",
                proc::UNCONDITIONAL_IO_EXITING => "unconditional I/O exiting",
                proc::RDPMC_EXITING => "RDPMC exiting",
                proc::MWAIT_EXITING => "MWAIT exiting",
                proc::MONITOR_EXITING => "MONITOR exiting",
                _ => "processor-based control",
            },
            ControlField::ProcBased2 => match mask {
                proc2::ENABLE_EPT => "enable EPT",
                proc2::ENABLE_VPID => "enable VPID",
                proc2::UNRESTRICTED_GUEST => "unrestricted guest",
                proc2::ENABLE_RDTSCP => "enable RDTSCP",
                proc2::ENABLE_INVPCID => "enable INVPCID",
                proc2::ENABLE_XSAVES => "enable XSAVES/XRSTORS",
                proc2::WBINVD_EXITING => "WBINVD exiting",
                _ => "secondary control",
            },
            ControlField::Exit => match mask {
                exit::HOST_ADDRESS_SPACE_SIZE => "host address-space size",
                exit::LOAD_EFER => "load IA32_EFER",
                exit::SAVE_EFER => "save IA32_EFER",
                exit::LOAD_PAT => "load IA32_PAT",
                exit::SAVE_PAT => "save IA32_PAT",
                exit::ACK_INTERRUPT_ON_EXIT => "acknowledge interrupt on exit",
                _ => "VM-exit control",
            },
            ControlField::Entry => match mask {
                entry::IA32E_MODE_GUEST => "IA-32e mode guest",
                entry::LOAD_EFER => "load IA32_EFER",
                entry::LOAD_PAT => "load IA32_PAT",
                _ => "VM-entry control",
            },
        }
    }
}

/// A required control is not supported by this processor (or emulator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlError {
    pub field: ControlField,
    /// Required bits that the allowed-1 mask forbids.
    pub unsupported: u32,
    /// Bits we asked to be 0 that the allowed-0 mask forces to 1.
    pub forced_on: u32,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.field.name())?;
        if self.unsupported != 0 {
            let bit = self.unsupported.trailing_zeros();
            write!(
                f,
                "required control \"{}\" (bit {}) is not supported (missing mask {:#010x})",
                self.field.bit_name(bit),
                bit,
                self.unsupported
            )?;
        }
        if self.forced_on != 0 {
            if self.unsupported != 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "control bits {:#010x} must be 1 but must stay clear for this hypervisor",
                self.forced_on
            )?;
        }
        Ok(())
    }
}

/// One capability MSR value split into its two masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// Bits that must be 1.
    pub must_be_one: u32,
    /// Bits that may be 1.
    pub may_be_one: u32,
}

impl Capability {
    pub const fn from_msr(value: u64) -> Self {
        Capability {
            must_be_one: value as u32,
            may_be_one: (value >> 32) as u32,
        }
    }

    /// Compute the field value: every `required` bit must be allowed, `optional`
    /// bits are taken where allowed, `forbidden` bits must not be forced to 1.
    pub fn adjust(
        self,
        field: ControlField,
        required: u32,
        optional: u32,
        forbidden: u32,
    ) -> Result<u32, ControlError> {
        let unsupported = required & !self.may_be_one;
        let forced_on = forbidden & self.must_be_one;
        if unsupported != 0 || forced_on != 0 {
            return Err(ControlError {
                field,
                unsupported,
                forced_on,
            });
        }
        Ok((required | (optional & self.may_be_one)) | self.must_be_one)
    }
}

/// The capability MSRs that matter for control adjustment, read once per CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmxCapabilities {
    pub basic: u64,
    pub pinbased: u64,
    pub procbased: u64,
    pub procbased2: u64,
    pub exit: u64,
    pub entry: u64,
    pub true_pinbased: u64,
    pub true_procbased: u64,
    pub true_exit: u64,
    pub true_entry: u64,
    pub ept_vpid: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    pub misc: u64,
}

impl VmxCapabilities {
    /// Read all capability MSRs through `rdmsr`. The TRUE_ and secondary MSRs are
    /// only read when the processor says they exist (reading them otherwise #GPs).
    pub fn read(mut rdmsr: impl FnMut(u32) -> u64) -> Self {
        let basic = rdmsr(MSR_VMX_BASIC);
        let procbased = rdmsr(MSR_VMX_PROCBASED_CTLS);
        let has_true = basic & BASIC_TRUE_CTLS != 0;
        let has_secondary = (procbased >> 32) as u32 & proc::ACTIVATE_SECONDARY != 0;
        let procbased2 = if has_secondary {
            rdmsr(MSR_VMX_PROCBASED_CTLS2)
        } else {
            0
        };
        let true_or = |rd: &mut dyn FnMut(u32) -> u64, msr: u32| if has_true { rd(msr) } else { 0 };
        VmxCapabilities {
            basic,
            pinbased: rdmsr(MSR_VMX_PINBASED_CTLS),
            procbased,
            procbased2,
            exit: rdmsr(MSR_VMX_EXIT_CTLS),
            entry: rdmsr(MSR_VMX_ENTRY_CTLS),
            true_pinbased: true_or(&mut rdmsr, MSR_VMX_TRUE_PINBASED_CTLS),
            true_procbased: true_or(&mut rdmsr, MSR_VMX_TRUE_PROCBASED_CTLS),
            true_exit: true_or(&mut rdmsr, MSR_VMX_TRUE_EXIT_CTLS),
            true_entry: true_or(&mut rdmsr, MSR_VMX_TRUE_ENTRY_CTLS),
            // EPT/VPID capabilities exist only if EPT or VPID may be enabled.
            ept_vpid: if (procbased2 >> 32) as u32 & (proc2::ENABLE_EPT | proc2::ENABLE_VPID) != 0 {
                rdmsr(MSR_VMX_EPT_VPID_CAP)
            } else {
                0
            },
            cr0_fixed0: rdmsr(MSR_VMX_CR0_FIXED0),
            cr0_fixed1: rdmsr(MSR_VMX_CR0_FIXED1),
            cr4_fixed0: rdmsr(MSR_VMX_CR4_FIXED0),
            cr4_fixed1: rdmsr(MSR_VMX_CR4_FIXED1),
            misc: rdmsr(MSR_VMX_MISC),
        }
    }

    pub const fn has_true_controls(&self) -> bool {
        self.basic & BASIC_TRUE_CTLS != 0
    }

    /// VMCS revision identifier (bits 30:0 of IA32_VMX_BASIC).
    pub const fn revision_id(&self) -> u32 {
        (self.basic & 0x7fff_ffff) as u32
    }

    /// Size of the VMXON region and VMCS in bytes (bits 44:32).
    pub const fn region_size(&self) -> u32 {
        ((self.basic >> 32) & 0x1fff) as u32
    }

    pub fn capability(&self, field: ControlField) -> Capability {
        let t = self.has_true_controls();
        Capability::from_msr(match field {
            ControlField::PinBased if t => self.true_pinbased,
            ControlField::PinBased => self.pinbased,
            ControlField::ProcBased if t => self.true_procbased,
            ControlField::ProcBased => self.procbased,
            ControlField::ProcBased2 => self.procbased2,
            ControlField::Exit if t => self.true_exit,
            ControlField::Exit => self.exit,
            ControlField::Entry if t => self.true_entry,
            ControlField::Entry => self.entry,
        })
    }

    /// Adjust `required | optional` for one field (see [`Capability::adjust`]).
    pub fn adjust(
        &self,
        field: ControlField,
        required: u32,
        optional: u32,
    ) -> Result<u32, ControlError> {
        self.capability(field).adjust(field, required, optional, 0)
    }

    /// Apply the CR0 fixed bits: FIXED0 bits forced on, bits clear in FIXED1 forced off.
    /// With unrestricted guest, PE and PG may be 0 in a guest (SDM 26.3.1.1).
    pub const fn fix_cr0(&self, cr0: u64, unrestricted: bool) -> u64 {
        let mut fixed0 = self.cr0_fixed0;
        if unrestricted {
            fixed0 &= !((1 << 0) | (1 << 31));
        }
        (cr0 | fixed0) & self.cr0_fixed1
    }

    pub const fn fix_cr4(&self, cr4: u64) -> u64 {
        (cr4 | self.cr4_fixed0) & self.cr4_fixed1
    }
}

/// The control words a vCPU runs with, after adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Controls {
    pub pin: u32,
    pub proc: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
}

/// What NexusOS needs for a 64-bit guest with EPT, VPID and bitmaps; RDTSCP,
/// INVPCID and XSAVES are passed through where available so guests that
/// detect them through CPUID do not #UD. NMIs exit (kicks between CPUs, and the
/// primary's own NMIs, which are re-injected), with virtual NMIs so that an
/// NMI waits (NMI-window exiting) while the guest blocks NMIs. HLT exiting is
/// switched off per vCPU for the primary, external-interrupt exiting on for
/// test partitions (their deadline timer). WBINVD, RDPMC, MWAIT and MONITOR
/// exit where the CPU allows it (review M2; INVD always exits): the primary's
/// vCPUs drop [`proc::UNTRUSTED_ONLY`] again.
pub fn nexus_controls(caps: &VmxCapabilities) -> Result<Controls, ControlError> {
    let pin = caps.adjust(
        ControlField::PinBased,
        pin::NMI_EXITING | pin::VIRTUAL_NMIS,
        0,
    )?;
    let proc = caps.adjust(
        ControlField::ProcBased,
        proc::HLT_EXITING | proc::USE_IO_BITMAPS | proc::USE_MSR_BITMAPS | proc::ACTIVATE_SECONDARY,
        proc::UNTRUSTED_ONLY,
    )?;
    let proc2 = caps.adjust(
        ControlField::ProcBased2,
        proc2::ENABLE_EPT | proc2::ENABLE_VPID,
        proc2::UNRESTRICTED_GUEST
            | proc2::ENABLE_RDTSCP
            | proc2::ENABLE_INVPCID
            | proc2::ENABLE_XSAVES
            | proc2::WBINVD_EXITING,
    )?;
    let exit = caps.adjust(
        ControlField::Exit,
        exit::HOST_ADDRESS_SPACE_SIZE | exit::SAVE_EFER | exit::LOAD_EFER,
        exit::SAVE_PAT | exit::LOAD_PAT,
    )?;
    let entry = caps.adjust(
        ControlField::Entry,
        entry::IA32E_MODE_GUEST | entry::LOAD_EFER,
        entry::LOAD_PAT,
    )?;
    Ok(Controls {
        pin,
        proc,
        proc2,
        exit,
        entry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values as Bochs 2.7 reports them for `corei7_skylake_x` (IA32_VMX_BASIC measured,
    // see reference/emulation.md); the control MSRs follow the SDM default1 layout.
    const BASIC: u64 = 0x00d8_1000_0000_002b;

    fn caps() -> VmxCapabilities {
        VmxCapabilities {
            basic: BASIC,
            // default1 bits 1,2,4 must be 1 in the plain MSR, clearable in TRUE_.
            pinbased: 0x0000_007f_0000_0016,
            true_pinbased: 0x0000_007f_0000_0000,
            procbased: 0xfff9_fffe_0401_e172,
            true_procbased: 0xfff9_fffe_0400_6172,
            procbased2: 0x0053_7fff_0000_0000,
            exit: 0x01ff_ffff_0003_6dff,
            true_exit: 0x01ff_ffff_0003_6dfb,
            entry: 0x0003_ffff_0000_11ff,
            true_entry: 0x0003_ffff_0000_11fb,
            ept_vpid: 0x0f01_0633_4141,
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xffff_ffff,
            cr4_fixed0: 0x2000,
            cr4_fixed1: 0x0037_27ff,
            misc: 0,
        }
    }

    #[test]
    fn basic_fields() {
        let c = caps();
        assert!(c.has_true_controls());
        assert_eq!(c.revision_id(), 0x2b);
        assert_eq!(c.region_size(), 0x1000);
    }

    #[test]
    fn allowed0_bits_are_forced_on() {
        let cap = Capability::from_msr(0x0000_00ff_0000_0016);
        assert_eq!(cap.adjust(ControlField::PinBased, 0, 0, 0), Ok(0x16));
        assert_eq!(cap.adjust(ControlField::PinBased, 1, 0, 0), Ok(0x17));
    }

    #[test]
    fn optional_bits_only_where_allowed1() {
        let cap = Capability::from_msr(0x0000_000f_0000_0000);
        assert_eq!(
            cap.adjust(ControlField::ProcBased2, 0x1, 0xf0 | 0x2, 0),
            Ok(0x3)
        );
    }

    #[test]
    fn unsupported_required_control_is_named() {
        // EPT (bit 1) not in allowed-1.
        let cap = Capability::from_msr(0x0000_00fd_0000_0000);
        let err = cap
            .adjust(ControlField::ProcBased2, proc2::ENABLE_EPT, 0, 0)
            .unwrap_err();
        assert_eq!(err.unsupported, proc2::ENABLE_EPT);
        let msg = format!("{err}");
        assert!(msg.contains("enable EPT"), "{msg}");
        assert!(msg.contains("secondary processor-based"), "{msg}");
    }

    #[test]
    fn forbidden_bit_forced_on_is_an_error() {
        let cap = Capability::from_msr(0x0000_00ff_0000_0004);
        let err = cap.adjust(ControlField::Exit, 0, 0, 0x4).unwrap_err();
        assert_eq!(err.forced_on, 0x4);
    }

    #[test]
    fn true_msrs_used_when_basic_bit55_set() {
        let c = caps();
        // TRUE_ pin-based lets bits 1,2,4 be 0.
        assert_eq!(c.adjust(ControlField::PinBased, 0, 0), Ok(0));
        let mut plain = c;
        plain.basic &= !BASIC_TRUE_CTLS;
        assert_eq!(plain.adjust(ControlField::PinBased, 0, 0), Ok(0x16));
    }

    #[test]
    fn nexus_controls_on_skylake_like_caps() {
        let ctl = nexus_controls(&caps()).unwrap();
        assert_ne!(ctl.proc & proc::HLT_EXITING, 0);
        assert_ne!(ctl.proc & proc::ACTIVATE_SECONDARY, 0);
        assert_eq!(
            ctl.pin & (pin::NMI_EXITING | pin::VIRTUAL_NMIS),
            pin::NMI_EXITING | pin::VIRTUAL_NMIS
        );
        assert_ne!(ctl.proc2 & proc2::ENABLE_EPT, 0);
        assert_ne!(ctl.proc2 & proc2::ENABLE_VPID, 0);
        assert_ne!(ctl.proc2 & proc2::UNRESTRICTED_GUEST, 0);
        assert_ne!(ctl.entry & entry::IA32E_MODE_GUEST, 0);
        assert_ne!(ctl.exit & exit::HOST_ADDRESS_SPACE_SIZE, 0);
        // allowed-0 bits of the TRUE MSR are present.
        assert_eq!(ctl.proc & 0x0400_6172, 0x0400_6172);
        // Review M2: cache, counter and monitor instructions exit where allowed.
        assert_eq!(ctl.proc & proc::UNTRUSTED_ONLY, proc::UNTRUSTED_ONLY);
        assert_ne!(ctl.proc2 & proc2::WBINVD_EXITING, 0);
        // ... and are optional: a CPU without them still runs.
        let mut c = caps();
        c.true_procbased &= !((proc::UNTRUSTED_ONLY as u64) << 32);
        c.procbased2 &= !((proc2::WBINVD_EXITING as u64) << 32);
        let ctl = nexus_controls(&c).unwrap();
        assert_eq!(ctl.proc & proc::UNTRUSTED_ONLY, 0);
        assert_eq!(ctl.proc2 & proc2::WBINVD_EXITING, 0);
    }

    #[test]
    fn nexus_controls_without_ept_fails_clearly() {
        let mut c = caps();
        c.procbased2 &= !((proc2::ENABLE_EPT as u64) << 32);
        let err = nexus_controls(&c).unwrap_err();
        assert_eq!(err.field, ControlField::ProcBased2);
        assert!(format!("{err}").contains("enable EPT"));
    }

    #[test]
    fn read_skips_true_msrs_when_absent() {
        let mut seen = Vec::new();
        let c = VmxCapabilities::read(|msr| {
            seen.push(msr);
            match msr {
                MSR_VMX_BASIC => 0x0000_1000_0000_0001,
                _ => 0,
            }
        });
        assert!(!c.has_true_controls());
        assert!(!seen.contains(&MSR_VMX_TRUE_PINBASED_CTLS));
        assert!(!seen.contains(&MSR_VMX_PROCBASED_CTLS2));
        assert!(!seen.contains(&MSR_VMX_EPT_VPID_CAP));
    }

    #[test]
    fn cr_fixed_bits() {
        let c = caps();
        assert_eq!(c.fix_cr0(0, false), 0x8000_0021);
        assert_eq!(c.fix_cr0(0, true), 0x20);
        assert_eq!(c.fix_cr4(0), 0x2000);
        assert_eq!(c.fix_cr4(1 << 30), 0x2000);
    }
}
