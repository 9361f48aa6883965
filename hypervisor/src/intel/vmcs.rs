//! VMCS field encodings (SDM Vol. 3D appendix B) and small pure helpers for
//! guest segment access rights.
#![allow(missing_docs)]

/// 16-bit control fields.
pub mod ctrl16 {
    pub const VPID: u32 = 0x0000;
}

/// 16-bit guest-state fields.
pub mod guest16 {
    pub const ES_SELECTOR: u32 = 0x0800;
    pub const CS_SELECTOR: u32 = 0x0802;
    pub const SS_SELECTOR: u32 = 0x0804;
    pub const DS_SELECTOR: u32 = 0x0806;
    pub const FS_SELECTOR: u32 = 0x0808;
    pub const GS_SELECTOR: u32 = 0x080A;
    pub const LDTR_SELECTOR: u32 = 0x080C;
    pub const TR_SELECTOR: u32 = 0x080E;
}

/// 16-bit host-state fields.
pub mod host16 {
    pub const ES_SELECTOR: u32 = 0x0C00;
    pub const CS_SELECTOR: u32 = 0x0C02;
    pub const SS_SELECTOR: u32 = 0x0C04;
    pub const DS_SELECTOR: u32 = 0x0C06;
    pub const FS_SELECTOR: u32 = 0x0C08;
    pub const GS_SELECTOR: u32 = 0x0C0A;
    pub const TR_SELECTOR: u32 = 0x0C0C;
}

/// 64-bit control fields.
pub mod ctrl64 {
    pub const IO_BITMAP_A: u32 = 0x2000;
    pub const IO_BITMAP_B: u32 = 0x2002;
    pub const MSR_BITMAP: u32 = 0x2004;
    pub const EXIT_MSR_STORE_ADDR: u32 = 0x2006;
    pub const EXIT_MSR_LOAD_ADDR: u32 = 0x2008;
    pub const ENTRY_MSR_LOAD_ADDR: u32 = 0x200A;
    pub const TSC_OFFSET: u32 = 0x2010;
    pub const EPT_POINTER: u32 = 0x201A;
}

/// 64-bit read-only data fields.
pub mod ro64 {
    pub const GUEST_PHYSICAL_ADDRESS: u32 = 0x2400;
}

/// 64-bit guest-state fields.
pub mod guest64 {
    pub const VMCS_LINK_POINTER: u32 = 0x2800;
    pub const DEBUGCTL: u32 = 0x2802;
    pub const PAT: u32 = 0x2804;
    pub const EFER: u32 = 0x2806;
}

/// 64-bit host-state fields.
pub mod host64 {
    pub const PAT: u32 = 0x2C00;
    pub const EFER: u32 = 0x2C02;
}

/// 32-bit control fields.
pub mod ctrl32 {
    pub const PIN_BASED: u32 = 0x4000;
    pub const PROC_BASED: u32 = 0x4002;
    pub const EXCEPTION_BITMAP: u32 = 0x4004;
    pub const PF_ERROR_CODE_MASK: u32 = 0x4006;
    pub const PF_ERROR_CODE_MATCH: u32 = 0x4008;
    pub const CR3_TARGET_COUNT: u32 = 0x400A;
    pub const EXIT_CONTROLS: u32 = 0x400C;
    pub const EXIT_MSR_STORE_COUNT: u32 = 0x400E;
    pub const EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
    pub const ENTRY_CONTROLS: u32 = 0x4012;
    pub const ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
    pub const ENTRY_INTERRUPTION_INFO: u32 = 0x4016;
    pub const ENTRY_EXCEPTION_ERROR_CODE: u32 = 0x4018;
    pub const ENTRY_INSTRUCTION_LEN: u32 = 0x401A;
    pub const PROC_BASED2: u32 = 0x401E;
}

/// 32-bit read-only data fields.
pub mod ro32 {
    pub const VM_INSTRUCTION_ERROR: u32 = 0x4400;
    pub const EXIT_REASON: u32 = 0x4402;
    pub const EXIT_INTERRUPTION_INFO: u32 = 0x4404;
    pub const EXIT_INTERRUPTION_ERROR_CODE: u32 = 0x4406;
    pub const IDT_VECTORING_INFO: u32 = 0x4408;
    pub const IDT_VECTORING_ERROR_CODE: u32 = 0x440A;
    pub const EXIT_INSTRUCTION_LEN: u32 = 0x440C;
    pub const EXIT_INSTRUCTION_INFO: u32 = 0x440E;
}

/// 32-bit guest-state fields.
pub mod guest32 {
    pub const ES_LIMIT: u32 = 0x4800;
    pub const CS_LIMIT: u32 = 0x4802;
    pub const SS_LIMIT: u32 = 0x4804;
    pub const DS_LIMIT: u32 = 0x4806;
    pub const FS_LIMIT: u32 = 0x4808;
    pub const GS_LIMIT: u32 = 0x480A;
    pub const LDTR_LIMIT: u32 = 0x480C;
    pub const TR_LIMIT: u32 = 0x480E;
    pub const GDTR_LIMIT: u32 = 0x4810;
    pub const IDTR_LIMIT: u32 = 0x4812;
    pub const ES_AR: u32 = 0x4814;
    pub const CS_AR: u32 = 0x4816;
    pub const SS_AR: u32 = 0x4818;
    pub const DS_AR: u32 = 0x481A;
    pub const FS_AR: u32 = 0x481C;
    pub const GS_AR: u32 = 0x481E;
    pub const LDTR_AR: u32 = 0x4820;
    pub const TR_AR: u32 = 0x4822;
    pub const INTERRUPTIBILITY: u32 = 0x4824;
    pub const ACTIVITY_STATE: u32 = 0x4826;
    pub const SYSENTER_CS: u32 = 0x482A;
    pub const PREEMPTION_TIMER_VALUE: u32 = 0x482E;
}

/// 32-bit host-state field.
pub mod host32 {
    pub const SYSENTER_CS: u32 = 0x4C00;
}

/// Natural-width control fields.
pub mod ctrln {
    pub const CR0_GUEST_HOST_MASK: u32 = 0x6000;
    pub const CR4_GUEST_HOST_MASK: u32 = 0x6002;
    pub const CR0_READ_SHADOW: u32 = 0x6004;
    pub const CR4_READ_SHADOW: u32 = 0x6006;
}

/// Natural-width read-only data fields.
pub mod ron {
    pub const EXIT_QUALIFICATION: u32 = 0x6400;
    pub const GUEST_LINEAR_ADDRESS: u32 = 0x640A;
}

/// Natural-width guest-state fields.
pub mod guestn {
    pub const CR0: u32 = 0x6800;
    pub const CR3: u32 = 0x6802;
    pub const CR4: u32 = 0x6804;
    pub const ES_BASE: u32 = 0x6806;
    pub const CS_BASE: u32 = 0x6808;
    pub const SS_BASE: u32 = 0x680A;
    pub const DS_BASE: u32 = 0x680C;
    pub const FS_BASE: u32 = 0x680E;
    pub const GS_BASE: u32 = 0x6810;
    pub const LDTR_BASE: u32 = 0x6812;
    pub const TR_BASE: u32 = 0x6814;
    pub const GDTR_BASE: u32 = 0x6816;
    pub const IDTR_BASE: u32 = 0x6818;
    pub const DR7: u32 = 0x681A;
    pub const RSP: u32 = 0x681C;
    pub const RIP: u32 = 0x681E;
    pub const RFLAGS: u32 = 0x6820;
    pub const PENDING_DEBUG: u32 = 0x6822;
    pub const SYSENTER_ESP: u32 = 0x6824;
    pub const SYSENTER_EIP: u32 = 0x6826;
}

/// Natural-width host-state fields.
pub mod hostn {
    pub const CR0: u32 = 0x6C00;
    pub const CR3: u32 = 0x6C02;
    pub const CR4: u32 = 0x6C04;
    pub const FS_BASE: u32 = 0x6C06;
    pub const GS_BASE: u32 = 0x6C08;
    pub const TR_BASE: u32 = 0x6C0A;
    pub const GDTR_BASE: u32 = 0x6C0C;
    pub const IDTR_BASE: u32 = 0x6C0E;
    pub const SYSENTER_ESP: u32 = 0x6C10;
    pub const SYSENTER_EIP: u32 = 0x6C12;
    pub const RSP: u32 = 0x6C14;
    pub const RIP: u32 = 0x6C16;
}

/// Access-rights value for "segment unusable" (bit 16).
pub const AR_UNUSABLE: u32 = 1 << 16;

/// VMX access rights from a GDT descriptor: bits 40..55 of the descriptor
/// (type, S, DPL, P, AVL, L, D/B, G) land in bits 0..15 with 8..11 reserved.
pub const fn access_rights_from_descriptor(desc: u64) -> u32 {
    let raw = ((desc >> 40) & 0xf0ff) as u32;
    if raw & (1 << 7) == 0 {
        AR_UNUSABLE
    } else {
        raw
    }
}

/// Base address from a (non-system, 8-byte) GDT descriptor.
pub const fn base_from_descriptor(desc: u64) -> u64 {
    ((desc >> 16) & 0xff_ffff) | (((desc >> 56) & 0xff) << 24)
}

/// Limit in bytes from a GDT descriptor, scaled by the granularity bit.
pub const fn limit_from_descriptor(desc: u64) -> u32 {
    let raw = ((desc & 0xffff) | ((desc >> 32) & 0xf_0000)) as u32;
    if desc & (1 << 55) != 0 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// The width class of a field encoding (bits 14:13): 0 = 16, 1 = 64, 2 = 32, 3 = natural.
pub const fn field_width_bits(field: u32) -> u32 {
    match (field >> 13) & 3 {
        0 => 16,
        1 => 64,
        2 => 32,
        _ => 64,
    }
}

/// Read-only fields have type 1 in bits 11:10.
pub const fn is_read_only(field: u32) -> bool {
    (field >> 10) & 3 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_decoding() {
        // Flat 64-bit code: base 0, limit 0xfffff, G=1, L=1, P=1, DPL=0, type 0xb, S=1.
        let code64: u64 = 0x00af_9b00_0000_ffff;
        assert_eq!(access_rights_from_descriptor(code64), 0xa09b);
        assert_eq!(base_from_descriptor(code64), 0);
        assert_eq!(limit_from_descriptor(code64), 0xffff_ffff);
        // Flat data: D/B=1, type 3.
        let data: u64 = 0x00cf_9300_0000_ffff;
        assert_eq!(access_rights_from_descriptor(data), 0xc093);
        // Not present -> unusable.
        assert_eq!(access_rights_from_descriptor(0), AR_UNUSABLE);
        // Byte-granular limit and split base.
        let odd: u64 = 0x1200_8912_3456_0067;
        assert_eq!(base_from_descriptor(odd), 0x1212_3456);
        assert_eq!(limit_from_descriptor(odd), 0x67);
    }

    #[test]
    fn field_classes() {
        assert_eq!(field_width_bits(guest16::CS_SELECTOR), 16);
        assert_eq!(field_width_bits(ctrl64::EPT_POINTER), 64);
        assert_eq!(field_width_bits(ctrl32::PROC_BASED), 32);
        assert_eq!(field_width_bits(guestn::RIP), 64);
        assert!(is_read_only(ro32::EXIT_REASON));
        assert!(is_read_only(ro64::GUEST_PHYSICAL_ADDRESS));
        assert!(is_read_only(ron::EXIT_QUALIFICATION));
        assert!(!is_read_only(guestn::RIP));
    }
}
