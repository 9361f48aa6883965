//! VM-instruction error numbers (VMCS field 0x4400) and their meanings,
//! as listed in SDM Vol. 3C section 31.4 ("VM Instruction Error Numbers").

/// The meaning of VM-instruction error `n`.
pub const fn describe(n: u32) -> &'static str {
    match n {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME)",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with invalid executive-VMCS pointer",
        17 => "VM entry with non-launched executive VMCS",
        18 => "VM entry with executive-VMCS pointer not VMXON pointer",
        19 => "VMCALL with non-clear VMCS",
        20 => "VMCALL with invalid VM-exit control fields",
        22 => "VMCALL with incorrect MSEG revision identifier",
        23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
        24 => "VMCALL with invalid SMM-monitor features",
        25 => "VM entry with invalid VM-execution control fields in executive VMCS",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "unknown VM-instruction error number",
    }
}

/// A failed VMX instruction, as reported through RFLAGS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmFail {
    /// CF=1: no current VMCS, so no error number is available.
    Invalid,
    /// ZF=1: the error number is in the current VMCS's VM-instruction error field.
    Valid(u32),
}

impl core::fmt::Display for VmFail {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmFail::Invalid => f.write_str("VMfailInvalid (no current VMCS)"),
            VmFail::Valid(n) => write!(f, "VMfailValid error {}: {}", n, describe(*n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_numbers() {
        assert_eq!(describe(7), "VM entry with invalid control field(s)");
        assert_eq!(describe(8), "VM entry with invalid host-state field(s)");
        assert_eq!(
            describe(11),
            "VMPTRLD with incorrect VMCS revision identifier"
        );
        assert_eq!(describe(28), "invalid operand to INVEPT/INVVPID");
    }

    #[test]
    fn gaps_and_out_of_range_are_unknown() {
        for n in [0, 14, 21, 27, 29, 1000] {
            assert_eq!(describe(n), "unknown VM-instruction error number", "{n}");
        }
    }

    #[test]
    fn display_includes_number_and_meaning() {
        let s = format!("{}", VmFail::Valid(4));
        assert!(s.contains("error 4") && s.contains("non-clear VMCS"), "{s}");
        assert!(format!("{}", VmFail::Invalid).contains("no current VMCS"));
    }
}
